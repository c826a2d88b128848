//! The demonstration behind `scripts/demo.sh`: a renkei hub and a strongSwan
//! facility in network namespaces. The hub is set up with the operator's
//! commands (`init`, `peer add`, `serve`), the facility's strongSwan is
//! configured from `renkei export` output, connects, and the hub's status
//! and a ping through the tunnel are shown; everything is removed at the
//! end. Each command is printed before it runs (`hub#` on the hub,
//! `kyoto#` at the facility). `RENKEI_BIN` names the renkei binary (the
//! script passes the release build).

use renkei_interop_tests::{show_commands, Facility, Lab, Role, HUB_INNER, SITE_INNER};
use std::process::{Command, ExitCode};
use std::time::Duration;

fn main() -> ExitCode {
    show_commands();
    println!("== a renkei hub (namespace with 192.0.2.1, servers on 203.0.113.0/25)");
    println!("== and a strongSwan facility 'kyoto' (192.0.2.2, LAN 198.51.100.0/26)");
    let lab = Lab::start(Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    ));
    println!("\n== the facility's router configuration, made by the hub");
    let export = lab.renkei(&["export", "kyoto", "--format", "swanctl", "--with-secret"]);
    if !export.status.success() {
        eprintln!(
            "renkei export failed: {}",
            String::from_utf8_lossy(&export.stderr)
        );
        return ExitCode::FAILURE;
    }
    print!("{}", String::from_utf8_lossy(&export.stdout));
    println!("\n== strongSwan loads it unchanged (--load-all replaces the lab's own configuration loaded above) and connects");
    lab.load_swanctl_conf("renkei-export.conf", &export.stdout);
    // Panics with every side's log if it does not (the namespaces are
    // removed as the lab is dropped).
    lab.wait_up(Duration::from_secs(30));
    println!("\n== the hub's view");
    print!(
        "{}",
        String::from_utf8_lossy(&lab.renkei(&["status"]).stdout)
    );
    println!("\n== ping from the hub side ({HUB_INNER}) to the facility's LAN ({SITE_INNER}) through the tunnel");
    let ping_args = ["ping", "-c", "3", "-i", "0.3", "-I", HUB_INNER, SITE_INNER];
    println!("hub# {}", ping_args.join(" "));
    let ping = Command::new("ip")
        .args(["netns", "exec", &lab.hub_ns])
        .args(ping_args)
        .status();
    println!("\n== the hub's view after the ping (the counters moved)");
    print!(
        "{}",
        String::from_utf8_lossy(&lab.renkei(&["status"]).stdout)
    );
    println!("\n== cleaning up the namespaces");
    match ping {
        Ok(s) if s.success() => {
            println!("demo: OK: the facility connected with the configuration `renkei export` made, and pings crossed the tunnel");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("demo: FAILED: no ping answer through the tunnel");
            ExitCode::FAILURE
        }
    }
}
