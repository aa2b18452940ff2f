"""Build-time check for images/npu/Dockerfile: the image's ENV must already hold everything CANN's
set_env.sh exports, because KFP and Kubernetes Jobs replace the command (no login shell, no entrypoint
script, so nothing ever sources it). Exits 1 naming each variable or path entry that is missing.

    python3 check_ascend_env.py [SET_ENV_SH]   (default /usr/local/Ascend/ascend-toolkit/set_env.sh)"""
import os
import subprocess
import sys


def exported_by(script: str, env: dict) -> dict:
    """The environment after sourcing `script` on top of `env`."""
    out = subprocess.run(["bash", "-c", 'source "$0" >/dev/null 2>&1; env -0', script], env=env,
                         capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def missing(script: str, env: dict) -> list[str]:
    after = exported_by(script, env)
    problems = []
    for name, value in sorted(after.items()):
        if name in ("_", "SHLVL", "PWD", "OLDPWD") or env.get(name) == value:
            continue
        have = env.get(name, "")
        if ":" in value or ":" in have:  # a search path: every entry set_env.sh adds must be there already
            entries = set(have.split(":"))
            problems += [f"{name} lacks {p}" for p in value.split(":") if p and p not in entries]
        else:
            problems.append(f"{name}={value!r} (image has {have!r})")
    return problems


if __name__ == "__main__":
    script = sys.argv[1] if len(sys.argv) > 1 else "/usr/local/Ascend/ascend-toolkit/set_env.sh"
    if not os.path.isfile(script):
        sys.exit(f"{script}: not found; is this a CANN base image?")
    problems = missing(script, dict(os.environ))
    if problems:
        sys.exit("the image's ENV misses what set_env.sh exports; add it to images/npu/Dockerfile:\n  "
                 + "\n  ".join(problems))
    print(f"ENV holds everything {script} exports")
