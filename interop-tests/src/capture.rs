//! The hub's outer traffic, captured and checked by an independent
//! dissector: Wireshark's `tshark`.
//!
//! [`Lab::capture`] starts `tcpdump` on the hub's outer link and returns a
//! guard; [`Capture::check`] stops it and has tshark dissect every packet.
//! A packet the hub sent must dissect without a malformed-packet mark and
//! without an expert info of warning level or above
//! ([`assert_dissects_clean`]). Where strongSwan logged its IKE keys
//! ([`crate::Facility::swan_log_keys`]), the encrypted IKE payloads of
//! every IKE SA set up by IKE_SA_INIT are decrypted and dissected too, and
//! tshark checks their integrity checksums (a wrong ICV is a warning).
//!
//! The hub sends ESP in UDP GSO trains; captured on a link that offloads
//! UDP segmentation, a train is one oversized frame, and tshark would see
//! gaps in the ESP sequence numbers. [`Lab::capture`] therefore turns the
//! offload off on the hub's veth (`ethtool -K … tx-udp-segmentation off`):
//! the kernel segments the trains before the capture point, as a NIC's
//! hardware would on the wire, and the hub's code path is unchanged.
//!
//! Every check prints one line, `dissector verdict: CASE: …`, so a run's
//! output gives the verdict per case.

use crate::{must, Lab};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running capture of the hub's outer link; dropping it stops tcpdump.
#[derive(Debug)]
pub struct Capture {
    /// The pcap file.
    pub file: PathBuf,
    /// The hub's outer address: packets from it are the ones judged.
    pub hub_addr: String,
    /// strongSwan logs that may hold IKE keys (`ike = 4`).
    key_logs: Vec<PathBuf>,
    tcpdump: Option<Child>,
    summary: Option<std::thread::JoinHandle<String>>,
    /// Packets the kernel dropped before tcpdump read them (known once
    /// stopped).
    pub kernel_drops: u64,
}

impl Lab {
    /// Starts capturing the hub's outer link (every frame, whole: up to
    /// 4096 bytes, above the links' MTU), and
    /// returns once tcpdump listens.
    pub fn capture(&self) -> Capture {
        let file = self.dir.join(format!(
            "outer-{}.pcap",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let iface = format!("rkh{}", self.id);
        must(Command::new("ip").args([
            "netns",
            "exec",
            &self.hub_ns,
            "ethtool",
            "-K",
            &iface,
            "tx-udp-segmentation",
            "off",
        ]));
        let key_logs = self
            .sites
            .iter()
            .filter(|s| s.facility.swan_log_keys)
            .map(|s| s.dir.join("charon.log"))
            .collect();
        Capture::start(&self.hub_ns, &iface, &file, self.hub_outer(), key_logs)
    }
}

impl Capture {
    /// tcpdump on `iface` in namespace `ns`, writing `file`.
    pub fn start(
        ns: &str,
        iface: &str,
        file: &Path,
        hub_addr: &str,
        key_logs: Vec<PathBuf>,
    ) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-n",
                "-U",
                "--immediate-mode",
            ])
            // In immediate mode every ring slot is as large as the snap
            // length: 4 KiB (frames on the lab's links are at most 1514
            // bytes) in a 32 MiB ring leaves room for 8192 packets while
            // tcpdump waits for a core.
            .args(["-s", "4096", "-B", "32768"])
            // tcpdump drops root to its own user unless told not to; the
            // lab's directory is root's.
            .args(["-Z", "root", "-i", iface, "-w"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump (scripts/install-deps.sh installs it)");
        // tcpdump says "listening on …" once its socket is open.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).unwrap_or(0);
            assert!(n > 0, "tcpdump on {iface} ended before listening");
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining its stderr so it never blocks on a full pipe; its
        // last lines count the packets it captured and lost.
        let summary = std::thread::spawn(move || {
            let mut all = String::new();
            while stderr.read_line(&mut all).unwrap_or(0) > 0 {}
            all
        });
        Capture {
            file: file.to_path_buf(),
            hub_addr: hub_addr.to_string(),
            key_logs,
            tcpdump: Some(child),
            summary: Some(summary),
            kernel_drops: 0,
        }
    }

    /// Stops tcpdump (SIGINT: it flushes and closes the file) and waits.
    /// It runs in immediate mode, so nothing the hub sent before is still
    /// in the kernel's capture buffer.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.tcpdump.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        if let Some(summary) = self.summary.take() {
            // "N packets dropped by kernel"
            let text = summary.join().unwrap_or_default();
            self.kernel_drops = text
                .lines()
                .find(|l| l.contains("dropped by kernel"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }

    /// Stops the capture and asserts the hub's packets dissect clean,
    /// printing the one-line verdict for `case`.
    pub fn check(mut self, case: &str) -> Verdict {
        self.stop();
        let keys: Vec<IkeKeys> = self
            .key_logs
            .iter()
            .flat_map(|l| ike_keys(&std::fs::read_to_string(l).unwrap_or_default()))
            .collect();
        assert_dissects_clean(&self.file, &self.hub_addr, &keys, self.kernel_drops, case)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What tshark found in a capture.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Packets the hub sent.
    pub from_hub: usize,
    /// Of those, IKE messages.
    pub ike_from_hub: usize,
    /// Of those, ESP packets.
    pub esp_from_hub: usize,
    /// Of those, IKE messages carrying an Encrypted Fragment payload
    /// (RFC 7383).
    pub ike_fragments_from_hub: usize,
    /// Encrypted IKE messages (both directions) tshark decrypted, checked
    /// the ICV of, and dissected.
    pub decrypted: usize,
    /// How many IKE SAs the capture set up, and for how many tshark had
    /// keys.
    pub ike_sas: usize,
    pub keyed_ike_sas: usize,
    /// ESP sequence gaps left unjudged because tcpdump lost packets.
    pub gaps_from_capture_drops: usize,
    /// Packets from the hub that tshark marked malformed or with an
    /// expert info of warning level or above: "frame: messages".
    pub problems: Vec<String>,
    /// The Notify message types of the IKE messages the hub sent, as
    /// tshark dissected them (encrypted ones where it had the keys), in
    /// capture order.
    pub notifies_from_hub: Vec<u16>,
}

/// The keys of one IKE SA as strongSwan logs them at `ike = 4`.
#[derive(Debug, Clone, Default)]
pub struct IkeKeys {
    pub sk_ei: String,
    pub sk_er: String,
    pub sk_ai: String,
    pub sk_ar: String,
}

/// Reads strongSwan's log (`ike = 4`): the keys of every IKE SA it
/// derived, in order (those set up by IKE_SA_INIT and those of rekeyed IKE
/// SAs; [`assert_dissects_clean`] finds which belongs to which IKE SA).
pub fn ike_keys(log: &str) -> Vec<IkeKeys> {
    let lines: Vec<&str> = log.lines().collect();
    // "15:50:13 15[IKE] Sk_ei secret => 32 bytes @ 0x…", then hex lines
    // "15:50:13 15[IKE]    0: 22 CE 00 …  ascii".
    let thread = |l: &str| -> Option<String> {
        let (_, rest) = l.split_once(' ')?;
        Some(rest.split_once('[')?.0.to_string())
    };
    let body = |l: &str| -> String {
        l.split_once("] ")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    };
    let mut out: Vec<IkeKeys> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let b = body(l);
        let Some((name, rest)) = b.split_once(" secret => ") else {
            continue;
        };
        let len: usize = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let t = thread(l);
        let mut hex = String::new();
        for next in &lines[i + 1..] {
            if hex.len() >= 2 * len || thread(next) != t {
                break;
            }
            let nb = body(next);
            let Some((offset, data)) = nb.trim_start().split_once(": ") else {
                break;
            };
            if offset.parse::<usize>().is_err() {
                break;
            }
            for byte in data.split_whitespace().take(16) {
                if byte.len() == 2 && byte.chars().all(|c| c.is_ascii_hexdigit()) {
                    hex.push_str(&byte.to_ascii_lowercase());
                } else {
                    break;
                }
            }
        }
        hex.truncate(2 * len);
        // Sk_d starts each derivation.
        if name == "Sk_d" {
            out.push(IkeKeys::default());
        }
        if let Some(k) = out.last_mut() {
            match name {
                "Sk_ei" => k.sk_ei = hex,
                "Sk_er" => k.sk_er = hex,
                "Sk_ai" => k.sk_ai = hex,
                "Sk_ar" => k.sk_ar = hex,
                _ => {}
            }
        }
    }
    out.retain(|k| !k.sk_ei.is_empty() && !k.sk_er.is_empty());
    out
}

fn tshark(file: &Path, uat: &[String], filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-n", "-Y", filter, "-T", "fields"]);
    for u in uat {
        cmd.args(["-o", &format!("uat:ikev2_decryption_table:{u}")]);
    }
    for f in fields {
        cmd.args(["-e", f]);
    }
    cmd.args([
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ]);
    let out = must(&mut cmd);
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// "9fa8e4…" as a display-filter byte string "9f:a8:e4:…".
fn colons(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

/// tshark's names for an IKE SA's algorithms, from the negotiated
/// transform IDs and the key lengths; None for one it cannot decrypt.
fn uat_algorithms(encr: u32, integ: Option<u32>, keys: &IkeKeys) -> Option<(String, String)> {
    let key_bits = keys.sk_ei.len() / 2 * 8;
    let enc = match encr {
        12 => format!("AES-CBC-{key_bits} [RFC3602]"),
        // GCM keys carry a 4-byte salt.
        20 => format!("AES-GCM-{} with 16 octet ICV [RFC5282]", key_bits - 32),
        _ => return None,
    };
    let integ = match integ {
        None => "NONE [RFC4306]",
        Some(12) => "HMAC_SHA2_256_128 [RFC4868]",
        Some(13) => "HMAC_SHA2_384_192 [RFC4868]",
        Some(14) => "HMAC_SHA2_512_256 [RFC4868]",
        Some(_) => return None,
    };
    Some((enc, integ.to_string()))
}

/// Has tshark dissect `file` and asserts that no packet from `hub_addr` is
/// malformed or carries an expert info of warning level or above; with
/// `keys` (strongSwan's IKE keys), the encrypted IKE payloads of each IKE
/// SA set up by IKE_SA_INIT whose keys are among them are decrypted and
/// checked too (those of rekeyed IKE SAs are not: their SPIs travel
/// encrypted).
/// Prints the one-line verdict for `case`.
///
/// When tcpdump lost packets (`capture_drops`, from its summary), ESP
/// sequence-number gaps are the capture's, not the hub's: those expert
/// infos are left out (and counted in the verdict); everything else still
/// counts.
pub fn assert_dissects_clean(
    file: &Path,
    hub_addr: &str,
    keys: &[IkeKeys],
    capture_drops: u64,
    case: &str,
) -> Verdict {
    let from_hub = if hub_addr.contains(':') {
        format!("ipv6.src == {hub_addr}")
    } else {
        format!("ip.src == {hub_addr}")
    };
    // The IKE_SA_INIT responses that set up an IKE SA (with a KE payload),
    // in order, with the negotiated encryption and integrity.
    let inits = tshark(
        file,
        &[],
        "isakmp.exchangetype == 34 && isakmp.flag_r == 1 && isakmp.key_exchange.data",
        &[
            "isakmp.ispi",
            "isakmp.rspi",
            "isakmp.tf.id.encr",
            "isakmp.tf.id.integ",
        ],
    );
    let mut seen = std::collections::HashSet::new();
    let inits: Vec<Vec<String>> = inits
        .into_iter()
        .filter(|r| r.len() >= 2 && seen.insert((r[0].clone(), r[1].clone())))
        .collect();
    let mut uat = Vec::new();
    let mut verdict = Verdict {
        ike_sas: inits.len(),
        ..Verdict::default()
    };
    if !keys.is_empty() && !inits.is_empty() {
        // The IKE messages alone, for the trials below.
        let ike_only = file.with_extension("ike.pcap");
        must(
            Command::new("tshark")
                .arg("-r")
                .arg(file)
                .args(["-n", "-Y", "isakmp", "-w"])
                .arg(&ike_only),
        );
        let mut unused: Vec<&IkeKeys> = keys.iter().collect();
        for init in &inits {
            let num = |s: &str| s.split('|').next().and_then(|v| v.parse::<u32>().ok());
            let Some(encr) = init.get(2).and_then(|s| num(s)) else {
                continue;
            };
            let integ = init.get(3).and_then(|s| num(s));
            // The key set that decrypts this IKE SA's IKE_AUTH into ID
            // payloads with a correct ICV is its own.
            let found = unused.iter().position(|k| {
                let Some((enc, int)) = uat_algorithms(encr, integ, k) else {
                    return false;
                };
                let entry = format!(
                    "{},{},{},{},\"{enc}\",{},{},\"{int}\"",
                    init[0], init[1], k.sk_ei, k.sk_er, k.sk_ai, k.sk_ar
                );
                let rows = tshark(
                    &ike_only,
                    std::slice::from_ref(&entry),
                    &format!(
                        "isakmp.ispi == {} && isakmp.rspi == {} && isakmp.exchangetype == 35",
                        colons(&init[0]),
                        colons(&init[1])
                    ),
                    &["isakmp.id.type", "_ws.expert.message"],
                );
                let ok = rows
                    .iter()
                    .any(|r| r.first().is_some_and(|v| !v.is_empty()))
                    && rows.iter().all(|r| r.get(1).is_none_or(|v| v.is_empty()));
                if ok {
                    uat.push(entry);
                }
                ok
            });
            if let Some(i) = found {
                unused.remove(i);
            }
        }
        verdict.keyed_ike_sas = uat.len();
    }
    let rows = tshark(
        file,
        &uat,
        &from_hub,
        &[
            "frame.number",
            "isakmp.exchangetype",
            "esp.spi",
            "isakmp.typepayload",
        ],
    );
    verdict.from_hub = rows.len();
    verdict.ike_from_hub = rows
        .iter()
        .filter(|r| r.get(1).is_some_and(|v| !v.is_empty()))
        .count();
    verdict.esp_from_hub = rows
        .iter()
        .filter(|r| r.get(2).is_some_and(|v| !v.is_empty()))
        .count();
    verdict.ike_fragments_from_hub = rows
        .iter()
        .filter(|r| r.get(3).is_some_and(|v| v.split('|').any(|t| t == "53")))
        .count();
    verdict.decrypted = tshark(file, &uat, "isakmp.enc.decrypted", &["frame.number"]).len();
    verdict.notifies_from_hub = tshark(
        file,
        &uat,
        &format!("({from_hub}) && isakmp.notify.msgtype"),
        &["isakmp.notify.msgtype"],
    )
    .into_iter()
    .flat_map(|r| {
        r.first()
            .map(|v| {
                v.split([',', '|'])
                    .filter_map(|n| n.trim().parse::<u16>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    })
    .collect();
    verdict.problems = tshark(
        file,
        &uat,
        &format!("({from_hub}) && (_ws.malformed || _ws.expert.severity >= 0x00600000)"),
        &["frame.number", "_ws.col.Info", "_ws.expert.message"],
    )
    .into_iter()
    .filter(|r| {
        let capture_gap = capture_drops > 0
            && r.get(2).is_some_and(|m| {
                m.split('|').all(|m| {
                    m.starts_with("Wrong Sequence Number for SPI") && m.ends_with("missing")
                })
            });
        if capture_gap {
            verdict.gaps_from_capture_drops += 1;
        }
        !capture_gap
    })
    .map(|r| r.join(": "))
    .collect();
    let line = if verdict.problems.is_empty() {
        "clean".to_string()
    } else {
        format!("{} PROBLEM(S)", verdict.problems.len())
    };
    let lost = if capture_drops > 0 {
        format!(
            " (tcpdump lost {capture_drops} packets: {} ESP sequence gaps not judged)",
            verdict.gaps_from_capture_drops
        )
    } else {
        String::new()
    };
    println!(
        "dissector verdict: {case}: {line}; {} packets from the hub ({} IKE, {} ESP){lost}; {} of {} IKE SAs keyed, {} encrypted IKE messages decrypted and dissected",
        verdict.from_hub,
        verdict.ike_from_hub,
        verdict.esp_from_hub,
        verdict.keyed_ike_sas,
        verdict.ike_sas,
        verdict.decrypted
    );
    assert!(
        verdict.problems.is_empty(),
        "tshark finds fault with packets from the hub in {} ({case}):\n{}",
        file.display(),
        verdict.problems.join("\n")
    );
    assert!(
        verdict.from_hub > 0,
        "the capture of {case} holds no packet from the hub"
    );
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap of one IKE datagram from 192.0.2.1:500 to 192.0.2.2:500.
    fn pcap_of(ike: &[u8], name: &str) -> PathBuf {
        let udp_len = 8 + ike.len();
        let mut ip = vec![0x45, 0];
        ip.extend(((20 + udp_len) as u16).to_be_bytes());
        ip.extend([0, 1, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
        let sum = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![2u8; 6];
        frame.extend([4u8; 6]);
        frame.extend([8, 0]);
        frame.extend(ip);
        frame.extend(500u16.to_be_bytes());
        frame.extend(500u16.to_be_bytes());
        frame.extend((udp_len as u16).to_be_bytes());
        frame.extend([0, 0]);
        frame.extend(ike);
        let mut pcap = Vec::new();
        pcap.extend(0xa1b2_c3d4u32.to_le_bytes());
        pcap.extend(2u16.to_le_bytes());
        pcap.extend(4u16.to_le_bytes());
        for v in [
            0u32,
            0,
            65535,
            1,
            0,
            0,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            pcap.extend(v.to_le_bytes());
        }
        pcap.extend(frame);
        let path = std::env::temp_dir().join(format!("renkei-{}-{name}.pcap", std::process::id()));
        std::fs::write(&path, pcap).unwrap();
        path
    }

    /// An IKE_SA_INIT request header of `length` bytes announcing an SA
    /// payload of `sa_len` bytes of which only its 4-byte header follows.
    fn ike(length: u32, next: u8, sa_len: Option<u16>) -> Vec<u8> {
        let mut m = vec![0x11u8; 8];
        m.extend([0u8; 8]);
        m.extend([next, 0x20, 34, 0x08]);
        m.extend(0u32.to_be_bytes());
        m.extend(length.to_be_bytes());
        if let Some(l) = sa_len {
            m.extend([0, 0]);
            m.extend(l.to_be_bytes());
        }
        m
    }

    #[test]
    #[should_panic(expected = "tshark finds fault")]
    fn a_malformed_ike_message_from_the_hub_fails_the_check() {
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let file = Remove(pcap_of(&ike(60, 33, Some(40)), "malformed"));
        assert_dissects_clean(&file.0, "192.0.2.1", &[], 0, "malformed");
    }

    #[test]
    fn a_well_formed_ike_header_from_the_hub_passes() {
        let file = pcap_of(&ike(28, 0, None), "clean");
        let v = assert_dissects_clean(&file, "192.0.2.1", &[], 0, "clean");
        assert_eq!((v.from_hub, v.ike_from_hub), (1, 1));
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn strongswan_key_dumps_are_read() {
        let log = "\
15:50:13 15[IKE] Sk_d secret => 4 bytes @ 0x1
15:50:13 15[IKE]    0: 01 02 03 04                                      ....
15:50:13 16[IKE] unrelated line
15:50:13 15[IKE] Sk_ai secret => 0 bytes @ (nil)
15:50:13 15[IKE] Sk_ei secret => 18 bytes @ 0x2
15:50:13 15[IKE]    0: 22 CE 00 00 B4 54 27 92 40 58 CC 7D 02 C4 01 C7  \"....T'.@X.}....
15:50:13 15[IKE]   16: BD 96                                            ..
15:50:13 15[IKE] Sk_er secret => 2 bytes @ 0x3
15:50:13 15[IKE]    0: DF 79                                            .y
";
        let keys = ike_keys(log);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].sk_ei, "22ce0000b45427924058cc7d02c401c7bd96");
        assert_eq!(keys[0].sk_er, "df79");
        assert_eq!(keys[0].sk_ai, "");
    }
}
