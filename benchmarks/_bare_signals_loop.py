"""The baseline for signals.py: a signal backfill in a plain loop, nothing else.

The profile, every page of sleeps, then each final sleep's signals with the same `types`, one
requests.Session, each sleep's signals written as one JSON line, as the tap's records are.
Usage: python benchmarks/_bare_signals_loop.py API_URL ACCESS_TOKEN OUTPUT TYPES
(TYPES comma-separated, e.g. hr,skin_temp)
"""

from __future__ import annotations

import json
import sys

import requests


def main(api_url: str, token: str, output: str, types: str) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    kinds = types.split(",")
    with open(output, "w") as out:
        response = session.get(api_url + "/v2/user/profile/basic", timeout=60)
        response.raise_for_status()
        user_id = response.json()["user_id"]
        params: dict[str, str | int] = {"limit": 25}
        while True:
            response = session.get(api_url + "/v2/activity/sleep", params=params, timeout=60)
            response.raise_for_status()
            page = response.json()
            for sleep in page["records"]:
                out.write(json.dumps(sleep) + "\n")
                if sleep["score_state"] == "PENDING_SCORE" or not sleep.get("end"):
                    continue
                answer = session.get(
                    f"{api_url}/v2/activity/sleep/{sleep['id']}/stream",
                    params={"types": kinds},
                    timeout=60,
                )
                answer.raise_for_status()
                body = answer.json()
                record = {"sleep_id": sleep["id"], "user_id": user_id, **body}
                out.write(json.dumps(record) + "\n")
            if not page.get("next_token"):
                break
            params["nextToken"] = page["next_token"]


if __name__ == "__main__":
    main(*sys.argv[1:5])
