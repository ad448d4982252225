"""The baseline for throughput.py: the tap's HTTP calls in a plain loop, nothing else.

Same endpoints, page size and nextToken paging as a full sync, one requests.Session, each record
written as a JSON line. Usage: python benchmarks/_bare_loop.py API_URL ACCESS_TOKEN OUTPUT
"""

from __future__ import annotations

import json
import sys

import requests

SINGLE = ("/v2/user/profile/basic", "/v2/user/measurement/body")
PAGED = ("/v2/cycle", "/v2/recovery", "/v2/activity/sleep", "/v2/activity/workout")


def main(api_url: str, token: str, output: str) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    with open(output, "w") as out:
        for path in SINGLE:
            response = session.get(api_url + path, timeout=60)
            response.raise_for_status()
            out.write(json.dumps(response.json()) + "\n")
        for path in PAGED:
            params: dict[str, str | int] = {"limit": 25}
            while True:
                response = session.get(api_url + path, params=params, timeout=60)
                response.raise_for_status()
                page = response.json()
                for record in page["records"]:
                    out.write(json.dumps(record) + "\n")
                if not page.get("next_token"):
                    break
                params["nextToken"] = page["next_token"]


if __name__ == "__main__":
    main(*sys.argv[1:4])
