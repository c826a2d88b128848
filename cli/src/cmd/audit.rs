//! `renkei audit verify | rotate | show`: the append-only audit log.

use crate::args::AuditCommand;
use crate::audit;
use crate::i18n::local_time_rfc3339;
use crate::state::StateDir;
use anyhow::{Context, Result};
use rust_i18n::t;

pub(crate) fn run(state: &StateDir, cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify { anchor } => {
            let v = audit::verify(state, anchor.as_deref())?;
            let key = if v.segments == 1 {
                "audit.intact_one"
            } else {
                "audit.intact_many"
            };
            println!(
                "{}",
                t!(
                    key,
                    records = v.records,
                    segments = v.segments,
                    head = v.head
                )
            );
            Ok(())
        }
        AuditCommand::Rotate => {
            let r = audit::rotate(state, &audit::actor())?;
            println!(
                "{}",
                t!(
                    "audit.rotated",
                    segment = r.segment.display(),
                    head = r.head
                )
            );
            Ok(())
        }
        AuditCommand::Show {
            tail,
            json,
            facility,
            event,
            since,
            until,
        } => {
            let filter = audit::Filter {
                facility,
                event,
                since,
                until,
            };
            let mut shown: std::collections::VecDeque<String> =
                std::collections::VecDeque::with_capacity(tail.min(4096));
            // Streamed: only the newest `tail` matches are held.
            for path in audit::segments(state)? {
                let file = std::fs::File::open(&path)
                    .with_context(|| t!("audit.reading", path = path.display()))?;
                for line in std::io::BufRead::lines(std::io::BufReader::new(file)) {
                    let line = line.with_context(|| t!("audit.reading", path = path.display()))?;
                    if filter.matches(&audit::Line::parse(&line)) {
                        if shown.len() == tail {
                            shown.pop_front();
                        }
                        if tail > 0 {
                            shown.push_back(line);
                        }
                    }
                }
            }
            for line in &shown {
                if json {
                    println!("{line}");
                } else {
                    let r = audit::Line::parse(line);
                    println!(
                        // The sequence number unpadded, as before (the
                        // width was never applied to a JSON value).
                        "{} {} {:<24} {:<22} {}",
                        r.seq.map_or("null".into(), |n| n.to_string()),
                        r.time.as_deref().map_or("?".into(), local_time_rfc3339),
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
