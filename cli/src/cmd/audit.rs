//! `renkei audit verify | show`: the append-only audit log.

use crate::args::AuditCommand;
use crate::audit;
use crate::state::StateDir;
use anyhow::{Context, Result};

pub(crate) fn run(state: &StateDir, cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify => {
            let v = audit::verify(state)?;
            println!("audit log intact: {} records, head {}", v.records, v.head);
            Ok(())
        }
        AuditCommand::Show { tail, json } => {
            // No log yet is no records; one this user may not read is
            // an error that says so (not an empty log).
            let path = state.audit_log();
            let text = if state.exists(&path, "reading the audit log")? {
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
            } else {
                String::new()
            };
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(tail)..] {
                if json {
                    println!("{line}");
                } else {
                    let r = audit::Line::parse(line);
                    println!(
                        // The sequence number unpadded, as before (the
                        // width was never applied to a JSON value).
                        "{} {} {:<24} {:<22} {}",
                        r.seq.map_or("null".into(), |n| n.to_string()),
                        r.time.as_deref().unwrap_or("?"),
                        r.actor.as_deref().unwrap_or("?"),
                        r.event.as_deref().unwrap_or("?"),
                        r.details
                    );
                }
            }
            Ok(())
        }
    }
}
