//! `notify`: alert records from a file routed, rendered and delivered (or shown with
//! `--dry-run`); without `--input`, the notifier service on Kafka.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::services::run_services;
use super::{init_logging, load_config};

pub fn cmd_notify(
    config: Option<PathBuf>,
    input: Option<PathBuf>,
    accounts: Option<PathBuf>,
    dry_run: bool,
) -> Result<()> {
    use churnwatch::accounts::MetaStore;
    use churnwatch::notify::{deliver::Sender, plan, render};
    let mut cfg = load_config(config.as_deref())?;
    init_logging(&cfg);
    let Some(input) = input else {
        anyhow::ensure!(!dry_run, "--dry-run needs --input");
        if let Some(a) = accounts {
            cfg.notify.accounts_file = a.display().to_string();
        }
        return run_services(cfg, false, true);
    };
    let accounts = accounts.or_else(|| {
        (!cfg.notify.accounts_file.is_empty()).then(|| cfg.notify.accounts_file.clone().into())
    });
    let meta = match accounts {
        Some(p) => MetaStore::load(&p)?,
        None => MetaStore::default(),
    };
    let text = std::fs::read_to_string(&input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: churnwatch::record::AlertRecord = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not an alert record", input.display(), i + 1))?;
        records.push(v);
    }
    if cfg.notify.receivers.is_empty() {
        anyhow::bail!(
            "no receivers configured: add [[notify.receivers]] and [notify.route] to the config"
        );
    }
    // Secrets are read now, in a dry run too, so that a missing one fails here and not
    // only when sending (their values are never printed).
    let sender = Sender::new(&cfg.notify)
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}{}",
                if dry_run {
                    " (a real run would fail: set it before sending)"
                } else {
                    ""
                }
            )
        })?
        .with_priority(cfg.priority.clone());
    let notes = plan(&cfg.notify, records, &meta);
    let no_owner: std::collections::BTreeSet<&str> = notes
        .iter()
        .filter(|n| n.owner.is_empty())
        .flat_map(|n| n.alerts.iter().map(|a| a.id.as_str()))
        .collect();
    if !no_owner.is_empty() {
        eprintln!(
            "warning: {} alert(s) carry no owner (their accounts have no metadata, or no \
             owner_email in it): each receiver gets them in one \"(no owner)\" message; give \
             the owners with --accounts F (CSV or JSON) or notify.accounts_file",
            no_owner.len()
        );
    }
    let kinds: std::collections::HashMap<&str, &str> = cfg
        .notify
        .receivers
        .iter()
        .map(|r| (r.name.as_str(), r.kind.as_str()))
        .collect();
    if dry_run {
        for n in &notes {
            let kind = kinds.get(n.receiver.as_str()).copied().unwrap_or("?");
            let to = if n.owner.is_empty() {
                "(no owner)".to_string()
            } else {
                n.owner.clone()
            };
            println!(
                "== {kind} receiver {:?} for {to}: {} alert(s), idempotency key {}",
                n.receiver,
                n.alerts.len(),
                n.idempotency_key()
            );
            match kind {
                "email" => {
                    let (subject, body, _) = render::email(
                        n,
                        &cfg.notify.crm_url_template,
                        &cfg.notify.inbox_url,
                        &cfg.priority,
                    );
                    println!("Subject: {subject}\n\n{body}");
                }
                "slack" => {
                    let mention = cfg
                        .notify
                        .receivers
                        .iter()
                        .any(|r| r.name == n.receiver && r.mention_owner);
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&render::slack(
                            n,
                            &render::SlackOptions {
                                crm_template: &cfg.notify.crm_url_template,
                                inbox_url: &cfg.notify.inbox_url,
                                mention_owner: mention,
                                priority: cfg.priority.clone(),
                                buttons: cfg.notify.slack.interactions,
                            }
                        ))?
                    );
                }
                _ => println!("{}", serde_json::to_string_pretty(&render::webhook(n))?),
            }
            println!();
        }
        eprintln!("{} notification(s) would be sent", notes.len());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut failed = 0;
    let results = rt.block_on(sender.deliver_all(&notes));
    for (n, result) in notes.iter().zip(results) {
        let to = if n.owner.is_empty() {
            "(no owner)"
        } else {
            n.owner.as_str()
        };
        match result {
            Ok(attempts) => println!(
                "delivered to {:?} for {to}: {} alert(s), {attempts} attempt(s)",
                n.receiver,
                n.alerts.len()
            ),
            Err(e) => {
                failed += 1;
                let dead = serde_json::json!({"receiver": n.receiver, "owner": n.owner, "reason": e.to_string(),
                    "idempotency_key": n.idempotency_key(), "alerts": n.alerts});
                eprintln!("{dead}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} notification(s) failed (dead letters on stderr)",
            notes.len()
        );
    }
    Ok(())
}
