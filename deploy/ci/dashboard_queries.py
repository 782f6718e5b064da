#!/usr/bin/env python3
"""Runs every query of a Grafana dashboard against Prometheus' HTTP API; used by
.ci/checks/deploy.sh.

Each panel target's `expr` (rows' nested panels included) has Grafana's interval variables
replaced by WINDOW and is evaluated as an instant query. A query passes when Prometheus
answers `success` with at least one series or sample whose value is a number (not NaN): a
panel that would show "No data" fails the check. Standard library only; every request has a
timeout and every answer is read bounded.

    dashboard_queries.py --prometheus http://127.0.0.1:9090 --window 1m DASHBOARD.json
"""

import argparse
import json
import math
import sys
import urllib.parse
import urllib.request

# Grafana's built-in interval variables, in both spellings.
INTERVAL_VARIABLES = [
    "$__rate_interval",
    "${__rate_interval}",
    "$__interval",
    "${__interval}",
    "$__range",
    "${__range}",
]
MAX_ANSWER_BYTES = 4 << 20


def queries(dashboard):
    """(panel title, refId, expr) of every target, nested rows included."""
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr:
                    found.append((panel.get("title", "?"), target.get("refId", "?"), expr))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return found


def substitute(expr, window):
    for variable in INTERVAL_VARIABLES:
        expr = expr.replace(variable, window)
    if "$" in expr:
        raise ValueError(f"a dashboard variable this check does not know is left in {expr!r}")
    return expr


def instant_query(base, expr, timeout):
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body = answer.read(MAX_ANSWER_BYTES + 1)
    if len(body) > MAX_ANSWER_BYTES:
        raise ValueError(f"answer over {MAX_ANSWER_BYTES} bytes")
    return json.loads(body)


def values(answer):
    """The numeric values of an instant query's answer (vector or scalar)."""
    data = answer.get("data", {})
    result = data.get("result", [])
    if data.get("resultType") == "scalar":
        result = [{"value": result}]
    out = []
    for item in result:
        try:
            out.append(float(item["value"][1]))
        except (KeyError, IndexError, TypeError, ValueError):
            pass
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="base URL of Prometheus")
    parser.add_argument("--window", default="1m", help="what $__rate_interval stands for")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per query")
    parser.add_argument("dashboard")
    args = parser.parse_args()

    with open(args.dashboard, encoding="utf-8") as f:
        dashboard = json.loads(f.read(MAX_ANSWER_BYTES))
    found = queries(dashboard)
    if not found:
        sys.exit(f"{args.dashboard}: no queries found")
    failed = 0
    for title, ref, expr in found:
        query = substitute(expr, args.window)
        try:
            answer = instant_query(args.prometheus, query, args.timeout)
        except Exception as e:  # a refused or malformed query fails this query, not the run
            failed += 1
            print(f"FAIL {title} [{ref}]: {e}\n     {query}")
            continue
        numbers = [v for v in values(answer) if not math.isnan(v)]
        if answer.get("status") != "success" or not numbers:
            failed += 1
            print(f"FAIL {title} [{ref}]: no data ({answer.get('status')}, "
                  f"{len(values(answer))} samples, all NaN or none)\n     {query}")
        else:
            shown = ", ".join(f"{v:.4g}" for v in numbers[:4])
            print(f"ok   {title} [{ref}]: {len(numbers)} series ({shown})")
    print(f"{len(found) - failed} of {len(found)} dashboard queries returned data")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
