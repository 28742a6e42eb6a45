#!/usr/bin/env bash
# scripts/check-readme.sh: checks the Markdown a user copies from.
#
# Usage: scripts/check-readme.sh [--run] [--kafka] [FILE.md ...]
#   (default files: README.md, deploy/README.md, docs/*.md)
#
# Always:
#   - code fences are balanced (an unclosed fence turns the rest of a page into code);
#   - every sh/bash block parses (`bash -n`);
#   - every `churnwatch SUBCOMMAND --option` written in a shell block or an inline code
#     span names a real subcommand and real options (checked against `--help` of the
#     built binary: $CHURNWATCH_BIN, default target/debug/churnwatch, built if missing).
# With --run, also runs the shell blocks marked by a line `<!-- check-readme: run -->`
# just above their fence, each in a fresh directory (with `config/` and `scripts/` of
# the repo, and the built binary on the PATH as `churnwatch`): `cargo ...` lines are
# skipped (the binary is already built) and `target/release/churnwatch` means that
# binary. With --kafka, also the blocks marked `<!-- check-readme: run kafka -->` (they
# start their own broker with scripts/kafka.sh: needs java and mvn). A marker may add
# `expect TEXT`: the block's output must contain TEXT.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

run=0 kafka=0 files=()
for a in "$@"; do
  case $a in
    --run) run=1 ;;
    --kafka) run=1 kafka=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) files+=("$a") ;;
  esac
done
if ((${#files[@]} == 0)); then
  files=(README.md deploy/README.md)
  for f in docs/*.md; do [[ -f $f ]] && files+=("$f"); done
fi

BIN=${CHURNWATCH_BIN:-$REPO/target/debug/churnwatch}
if [[ ! -x $BIN ]]; then
  echo "check-readme: building $BIN" >&2
  cargo build --quiet --bin churnwatch
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-readme.XXXXXX")
group=""
cleanup() {
  # A block that failed half-way may have left a daemon and a broker behind.
  if [[ -n $group ]]; then kill -TERM -- "-$group" 2>/dev/null || true; fi
  if [[ -d $WORK/kafka-started ]] && compgen -G "$WORK/kafka-started/*" >/dev/null; then
    KAFKA_STARTED_DIR=$WORK/kafka-started scripts/kafka.sh stop || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Static checks; writes the blocks to run as WORK/run-N.sh (+ .kafka, .expect).
python3 - "$BIN" "$WORK" "$run" "$kafka" "${files[@]}" <<'PY'
import re, shlex, subprocess, sys, os

bin_, work, run, kafka, files = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5:]
errors = []
helps = {}

def help_of(sub):
    if sub not in helps:
        p = subprocess.run([bin_, *sub.split(), "--help"], capture_output=True, text=True)
        helps[sub] = p.stdout if p.returncode == 0 else None
    return helps[sub]

def check_command(where, words):
    """words: a churnwatch command line split into words, starting after `churnwatch`."""
    if not words or words[0].startswith("-"):
        return
    sub = words[0]
    h = help_of(sub)
    if h is None:
        errors.append(f"{where}: `churnwatch {sub}`: no such subcommand")
        return
    # A subcommand with its own subcommands (`actions export`): check the options
    # against the nested one's help.
    if "\nCommands:" in h and len(words) > 1 and not words[1].startswith("-"):
        sub = f"{sub} {words[1]}"
        words = [sub] + words[1:]
        h = help_of(sub)
        if h is None:
            errors.append(f"{where}: `churnwatch {sub}`: no such subcommand")
            return
    for w in words[1:]:
        for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", w):
            if not re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", h):
                errors.append(f"{where}: `churnwatch {sub}` has no option {opt}")

def commands_in_shell(text):
    """Yields the word lists after each `churnwatch` invoked in shell text."""
    text = text.replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
        for seg in re.split(r"\|\||&&|[|;&]|\$\(", line):
            try:
                words = shlex.split(seg)
            except ValueError:
                words = seg.split()
            # The command word: past variable assignments and wrappers.
            i = 0
            while i < len(words) and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i])
                                      or words[i] in ("exec", "nohup", "time", "env")):
                i += 1
            if i < len(words) and words[i] == "timeout":
                i += 2
            if i < len(words) and (words[i] == "churnwatch" or words[i].endswith("/churnwatch")):
                yield words[i + 1:]

blocks_to_run = 0
for path in files:
    lines = open(path, encoding="utf-8").read().split("\n")
    fence = None  # (line number, marker, info, indent, body lines, run marker)
    prose = []
    pairs = []  # [open line, close line]
    for n, line in enumerate(lines, 1):
        s = line.strip()
        m = re.match(r"^(`{3,}|~{3,})(.*)$", s)
        if fence is None:
            if m:
                pairs.append([n, None])
                marker = None
                for back in range(n - 2, max(n - 4, -1), -1):
                    b = lines[back].strip()
                    if b.startswith("<!-- check-readme:"):
                        marker = b
                        break
                    if b:
                        break
                fence = (n, m.group(1), m.group(2).strip(), len(line) - len(line.lstrip()), [], marker)
            else:
                prose.append((n, line))
            continue
        start, mk, info, indent, body, marker = fence
        if m and m.group(1)[0] == mk[0] and len(m.group(1)) >= len(mk):
            if m.group(2).strip():
                errors.append(f"{path}:{n}: a fence with an info string ({s}) cannot close the "
                              f"block opened at line {start}: that block is never closed")
                # Treat it as the start of a new block, as a renderer would not.
                fence = (n, m.group(1), m.group(2).strip(), len(line) - len(line.lstrip()), [], None)
                continue
            text = "\n".join(l[indent:] if l[:indent].strip() == "" else l for l in body)
            if info in ("sh", "bash", "shell"):
                p = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
                if p.returncode != 0:
                    errors.append(f"{path}:{start}: shell block does not parse: {p.stderr.strip()}")
                for words in commands_in_shell(text):
                    check_command(f"{path}:{start}", words)
                if marker and run:
                    mm = re.match(r"<!-- check-readme: run( kafka)?(?: expect (.*?))? -->", marker)
                    if not mm:
                        errors.append(f"{path}:{start}: unreadable marker {marker}")
                    elif kafka or not mm.group(1):
                        blocks_to_run += 1
                        base = os.path.join(work, f"run-{blocks_to_run}")
                        script = []
                        for l in text.replace("\\\n", "\x00").split("\n"):
                            if l.lstrip().startswith("cargo "):
                                continue
                            script.append(l.replace("target/release/churnwatch", "churnwatch"))
                        open(base + ".sh", "w").write("\n".join(script).replace("\x00", "\\\n") + "\n")
                        open(base + ".where", "w").write(f"{path}:{start}")
                        if mm.group(1):
                            open(base + ".kafka", "w").write("")
                        if mm.group(2):
                            open(base + ".expect", "w").write(mm.group(2))
            fence = None
            pairs[-1][1] = n
        else:
            body.append(line)
    if fence is not None:
        hint = ", ".join(f"{a}-{b or '?'}" for a, b in pairs[-4:])
        hint = f" (the last blocks, as a renderer pairs their fences: lines {hint}; a stray fence shifts every later pair)"
        errors.append(f"{path}:{fence[0]}: code fence {fence[1]}{fence[2]} is never closed{hint}")
    # Inline code spans (they may wrap) outside code blocks.
    text = "\n".join(l for _, l in prose)
    for span in re.findall(r"`([^`]+)`", text):
        span = " ".join(span.split())
        if span.startswith("churnwatch "):
            for words in commands_in_shell(span):
                check_command(f"{path}: `{span}`", words)

for e in errors:
    print(f"check-readme: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check-readme: {', '.join(files)}: fences balanced, shell blocks parse, "
      f"churnwatch commands and options exist", file=sys.stderr)
PY

((run)) || exit 0
mkdir -p "$WORK/bin" && ln -s "$BIN" "$WORK/bin/churnwatch"
for script in "$WORK"/run-*.sh; do
  [[ -f $script ]] || continue
  where=$(<"${script%.sh}.where")
  dir=$WORK/dir-$(basename "$script" .sh); mkdir -p "$dir"
  ln -s "$REPO/config" "$REPO/scripts" "$dir/"
  echo "check-readme: running the block at $where" >&2
  started=$SECONDS
  # Its own session, so that cleanup can end whatever it left running.
  set +e
  (cd "$dir" && PATH=$WORK/bin:$PATH KAFKA_STARTED_DIR=$WORK/kafka-started \
    exec setsid bash -e -o pipefail "$script") >"$dir/out" 2>"$dir/err" &
  group=$!
  wait "$group"; rc=$?
  set -e
  group=""
  if ((rc != 0)); then
    echo "check-readme: the block at $where failed (exit $rc); its stderr:" >&2
    tail -n 30 "$dir/err" >&2
    exit 1
  fi
  if [[ -f ${script%.sh}.expect ]] && ! grep -qF -- "$(<"${script%.sh}.expect")" "$dir/out"; then
    echo "check-readme: the output of the block at $where lacks $(<"${script%.sh}.expect")" >&2
    tail -n 10 "$dir/out" >&2
    exit 1
  fi
  echo "check-readme: ok ($((SECONDS - started)) s)" >&2
done
