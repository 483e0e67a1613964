"""`snakemake --lint`, less the one lint this workflow declines: "Specify a conda environment or container for
each rule". No rule names a conda environment on purpose (README, "conda"; workflow/rules/common.smk):
Snakemake records a rule's conda environment on every run, so a named one fails every run without conda, and
an environment file it builds is a copy where `-e .` no longer finds the checkout. Any other lint fails.

Snakemake 9's command line has no switch to skip one lint and does not pass --lint json through, so this reads
its text report: blocks of ``Lints for <rule or snakefile>:`` with one ``    * <title>:`` line per lint.
"""

from __future__ import annotations

import re
import subprocess
import sys

DECLINED = ("Specify a conda environment or container for each rule.",)


def main(argv: list[str]) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", *argv], capture_output=True, text=True, check=False
    )
    report = result.stdout + result.stderr
    kept, declined = [], 0
    for block in re.split(r"^(?=Lints for )", report, flags=re.MULTILINE):
        if not block.startswith("Lints for "):
            continue
        titles = re.findall(r"^    \* (.+?):$", block, flags=re.MULTILINE)
        declined += sum(title in DECLINED for title in titles)
        if any(title not in DECLINED for title in titles):
            kept.append(block.rstrip())
    if kept:
        print("\n\n".join(kept))
        return 1
    if result.returncode != 0 and not declined:  # failed for another reason than lints (a syntax error, say)
        print(report)
        return result.returncode
    print(f"snakemake --lint: no lints ({declined} declined: {DECLINED[0]!r}, see .ci/snakemake_lint.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
