//! The demonstration behind `scripts/demo.sh`: a renkei hub and a strongSwan
//! facility in network namespaces; the facility connects, then the hub's
//! status and a ping through the tunnel are shown, and everything is removed.

use renkei_interop_tests::{Facility, Lab, Role, HUB_INNER, SITE_INNER};
use std::process::{Command, ExitCode};
use std::time::Duration;

fn main() -> ExitCode {
    println!("== starting a renkei hub (namespace with 192.0.2.1, servers on 203.0.113.0/25)");
    println!("== and a strongSwan facility 'kyoto' (192.0.2.2, LAN 198.51.100.0/26)");
    let lab = Lab::start(Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    ));
    println!("== the facility connects (swanctl --initiate)");
    if !lab.swan_initiate() {
        eprintln!("the facility could not connect; logs follow");
        lab.dump_logs();
        return ExitCode::FAILURE;
    }
    lab.wait_up(Duration::from_secs(30));
    println!("\n== renkei status");
    print!(
        "{}",
        String::from_utf8_lossy(&lab.renkei(&["status"]).stdout)
    );
    println!("\n== ping from the hub side ({HUB_INNER}) to the facility's LAN ({SITE_INNER}) through the tunnel");
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.hub_ns,
            "ping",
            "-c",
            "3",
            "-i",
            "0.3",
            "-I",
            HUB_INNER,
            SITE_INNER,
        ])
        .status();
    println!("\n== renkei status after the ping (counters moved)");
    print!(
        "{}",
        String::from_utf8_lossy(&lab.renkei(&["status"]).stdout)
    );
    println!("\n== cleaning up the namespaces");
    match ping {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
