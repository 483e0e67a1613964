# The Phase 1 review: one table over every study this machine ran.


rule check_phase1:
    input:
        get_optimal_configs(),
    output:
        markdown="results/summary.md",
        csv="results/summary.csv",
    log:
        f"{LOGS}/check_phase1.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/check_phase1.py"
