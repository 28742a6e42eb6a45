//! The README check (`scripts/check-readme.sh`, static part): the README passes, and the
//! mistakes it exists for are caught.

mod common;

use std::process::{Command, Output};

use common::{bin, repo};

fn check(files: &[&std::path::Path]) -> Output {
    Command::new(repo().join("scripts/check-readme.sh"))
        .args(files)
        .env("CHURNWATCH_BIN", bin())
        .output()
        .expect("run scripts/check-readme.sh")
}

#[test]
fn the_readmes_pass() {
    let out = check(&[&repo().join("README.md"), &repo().join("deploy/README.md")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_stray_fence_a_broken_block_and_a_wrong_option_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "stray fence",
            "# t\n\n```json\n{}\n```\n(one record.)\n```\n\n| a | b |\n",
            "never closed",
        ),
        (
            "info string on a closing fence",
            "```sh\nls\n```sh\nls\n```\n",
            "cannot close",
        ),
        (
            "shell that does not parse",
            "```sh\nif true; then echo\n```\n",
            "does not parse",
        ),
        (
            "unknown option",
            "```sh\nchurnwatch replay --input x --nope\n```\n",
            "has no option --nope",
        ),
        (
            "unknown option in an inline span",
            "Run `churnwatch gen --accounts 600 | churnwatch replay --inputs -`.\n",
            "has no option --inputs",
        ),
        (
            "unknown subcommand",
            "```sh\nchurnwatch tail\n```\n",
            "no such subcommand",
        ),
        (
            "unknown option of a nested subcommand",
            "```sh\nchurnwatch actions export --nope\n```\n",
            "`churnwatch actions export` has no option --nope",
        ),
        (
            "unknown nested subcommand",
            "```sh\nchurnwatch actions frob\n```\n",
            "`churnwatch actions frob`: no such subcommand",
        ),
    ];
    for (what, text, needle) in cases {
        let path = dir.path().join("t.md");
        std::fs::write(&path, text).unwrap();
        let out = check(&[&path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: passed");
        assert!(err.contains(needle), "{what}: {err}");
    }
    // And a good one passes.
    let path = dir.path().join("ok.md");
    std::fs::write(
        &path,
        "```sh\nchurnwatch gen --accounts 600 --seed 42 | churnwatch replay --input -\n\
         churnwatch actions export --topic t --output a.ndjson\n```\n",
    )
    .unwrap();
    let out = check(&[&path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
