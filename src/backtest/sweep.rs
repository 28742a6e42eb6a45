//! Sweeps: `--set KEY=V1,V2,...` flags, expanded into one config per combination
//! (cartesian product, last flag fastest), every one built and validated before
//! anything runs; then all runs over the one parsed history, on all cores.
//!
//! A value goes through the same path as a `CHURNWATCH_SECTION__KEY` environment
//! override (`Config::from_toml_str`), so it is typed the same way and an unknown key
//! or a wrong type is refused with the config's own message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::{Config, DEFAULT_TOML, ENV_PREFIX};

/// One `--set` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct SetFlag {
    pub key: String,
    pub values: Vec<String>,
}

/// A `--set` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("--set {0:?}: write KEY=V1,V2,... (e.g. rules.inactive.after_days=7,14)")]
    Syntax(String),
    #[error("--set {key}: {msg}")]
    Key { key: String, msg: String },
    #[error("--set {settings}: {source}")]
    Config {
        settings: String,
        source: crate::config::ConfigError,
    },
}

/// Parses `KEY=V1,V2,...`. Commas inside brackets, braces or quotes do not split, so
/// a TOML array or string can be one value.
pub fn parse_set(s: &str) -> Result<SetFlag, SweepError> {
    let (key, values) = s
        .split_once('=')
        .ok_or_else(|| SweepError::Syntax(s.into()))?;
    let key = key.trim();
    let ok_key = !key.is_empty()
        && key.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if !ok_key {
        return Err(SweepError::Syntax(s.into()));
    }
    let mut out = Vec::new();
    let (mut depth, mut quote, mut cur) = (0i32, None::<char>, String::new());
    for c in values.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_string());
    if out.iter().any(String::is_empty) {
        return Err(SweepError::Syntax(s.into()));
    }
    Ok(SetFlag {
        key: key.to_string(),
        values: out,
    })
}

/// One run of a sweep: its settings (swept key and raw value, in flag order) and the
/// config they give.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub settings: Vec<(String, String)>,
    pub config: Config,
    /// Every swept value equals the value the config file (or the default) sets.
    pub current: bool,
}

/// Reads an override value as the config would (TOML, else a string).
pub fn toml_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn lookup<'a>(t: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(t, |v, seg| v.get(seg))
}

fn same(a: &toml::Value, b: &toml::Value) -> bool {
    match (a, b) {
        (toml::Value::Integer(x), toml::Value::Float(y))
        | (toml::Value::Float(y), toml::Value::Integer(x)) => *x as f64 == *y,
        _ => a == b,
    }
}

/// Expands the flags into runs over `config_text` (the config file's text, `""` for
/// none) and `env` (the process environment, whose overrides still apply; a swept key
/// wins over them). Every config is built and validated here.
pub fn plan(
    config_text: &str,
    env: Vec<(String, String)>,
    sets: &[SetFlag],
) -> Result<Vec<RunSpec>, SweepError> {
    for (i, s) in sets.iter().enumerate() {
        if s.key.starts_with("input.")
            || s.key.starts_with("lifecycle.")
            || s.key == "input"
            || s.key == "lifecycle"
        {
            return Err(SweepError::Key {
                key: s.key.clone(),
                msg: "input and lifecycle settings change the history and its churns \
                      themselves; run one backtest per value instead"
                    .into(),
            });
        }
        if sets[..i].iter().any(|o| o.key == s.key) {
            return Err(SweepError::Key {
                key: s.key.clone(),
                msg: "given twice; list every value in one --set".into(),
            });
        }
    }
    let defaults: toml::Value = DEFAULT_TOML
        .parse::<toml::Table>()
        .map(toml::Value::Table)
        .expect("the embedded default config is TOML");
    let user: toml::Value = config_text
        .parse::<toml::Table>()
        .map(toml::Value::Table)
        .unwrap_or(toml::Value::Table(Default::default()));
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for s in sets {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                s.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((s.key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|settings| {
            let mut vars = env.clone();
            for (k, v) in &settings {
                vars.push((
                    format!("{ENV_PREFIX}{}", k.replace('.', "__").to_ascii_uppercase()),
                    v.clone(),
                ));
            }
            let config =
                Config::from_toml_str(config_text, vars).map_err(|source| SweepError::Config {
                    settings: settings
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    source,
                })?;
            let current = settings.iter().all(|(k, v)| {
                let now = lookup(&user, k).or_else(|| lookup(&defaults, k));
                now.is_some_and(|now| same(now, &toml_value(v)))
            });
            Ok(RunSpec {
                settings,
                config,
                current,
            })
        })
        .collect()
}

/// Runs `f` over every item on up to `threads` threads; results in item order.
/// `on_done` is called (from the worker threads) after each one.
pub fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
    on_done: impl Fn() + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().expect("no worker panicked")[i] = Some(r);
                on_done();
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_with_nested_commas() {
        let s = parse_set("rules.activity_drop.alpha=0.001, 0.01 ,0.05").unwrap();
        assert_eq!(s.key, "rules.activity_drop.alpha");
        assert_eq!(s.values, ["0.001", "0.01", "0.05"]);
        let s = parse_set("activation.required_events=[\"a\",\"b\"],[]").unwrap();
        assert_eq!(s.values, ["[\"a\",\"b\"]", "[]"]);
        for bad in ["novalue", "=1", "a..b=1", "Rules.x=1", "a=1,,2", "a="] {
            assert!(parse_set(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cartesian_product_last_flag_fastest() {
        let sets = [
            parse_set("rules.inactive.after_days=7,14").unwrap(),
            parse_set("rules.activity_drop.alpha=0.001,0.01,0.05").unwrap(),
        ];
        let runs = plan("", vec![], &sets).unwrap();
        let got: Vec<String> = runs
            .iter()
            .map(|r| format!("{}/{}", r.settings[0].1, r.settings[1].1))
            .collect();
        assert_eq!(
            got,
            ["7/0.001", "7/0.01", "7/0.05", "14/0.001", "14/0.01", "14/0.05"]
        );
        assert_eq!(runs[4].config.rules.inactive.after_days, 14);
        assert_eq!(runs[4].config.rules.activity_drop.alpha, 0.01);
        // The defaults are after_days = 14 and alpha = 0.001.
        let current: Vec<bool> = runs.iter().map(|r| r.current).collect();
        assert_eq!(current, [false, false, false, true, false, false]);
        let file = plan("[rules.inactive]\nafter_days = 7\n", vec![], &sets).unwrap();
        assert!(file[0].current && file[1..].iter().all(|r| !r.current));
        let one = plan("", vec![], &[]).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].settings.is_empty() && one[0].current);
    }

    #[test]
    fn unknown_keys_wrong_types_and_unsweepable_keys_are_refused() {
        let refuse = |flag: &str, needle: &str| {
            let e = plan("", vec![], &[parse_set(flag).unwrap()]).unwrap_err();
            assert!(e.to_string().contains(needle), "{flag}: {e}");
        };
        refuse("rules.inactive.after_dayz=7", "after_dayz");
        refuse("rules.inactive.after_days=7,soon", "after_days=soon");
        refuse("rules.activity_drop.alpha=2", "alpha");
        refuse("lifecycle.end_events=[]", "change the history");
        let e = plan(
            "",
            vec![],
            &[
                parse_set("rules.inactive.after_days=7").unwrap(),
                parse_set("rules.inactive.after_days=14").unwrap(),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("given twice"));
    }

    #[test]
    fn runs_in_item_order_on_several_threads() {
        let items: Vec<u64> = (0..50).collect();
        let done = AtomicUsize::new(0);
        let out = run_parallel(
            &items,
            4,
            |&i| i * i,
            || {
                done.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(out, items.iter().map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(done.load(Ordering::Relaxed), 50);
    }
}
