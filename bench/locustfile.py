"""A locust load profile for `dualrec serve`: stored users' recommendations, ad-hoc rankings and event writes.

    locust -f bench/locustfile.py --headless -u 16 -r 16 -t 30s --host http://127.0.0.1:8000 --only-summary

Users ``load0`` .. ``load{N-1}`` (``$LOAD_USERS``, default 50) must have stored events (the test seeds them);
``$LOAD_ITEMS`` (comma-separated catalog ids) are what it watches and asks about; ``$LOAD_API_KEY`` is sent as a Bearer key when set. Figures are printed by locust, never asserted.
"""

import os
import random

from locust import HttpUser, between, task

USERS = int(os.environ.get("LOAD_USERS", "50"))
KEY = os.environ.get("LOAD_API_KEY")
ITEMS = [int(x) for x in os.environ.get("LOAD_ITEMS", "1193,661,914,3408,2355,1197,1287,2804,594,919").split(",")]


class ServiceUser(HttpUser):
    wait_time = between(0, 0.01)

    def on_start(self):
        if KEY:
            self.client.headers["Authorization"] = f"Bearer {KEY}"

    @task(6)
    def stored_user_recommendations(self):
        user = f"load{random.randrange(USERS)}"
        self.client.get(f"/users/{user}/recommendations", params={"k": 10}, name="/users/[id]/recommendations")

    @task(3)
    def adhoc_recommendations(self):
        self.client.post("/recommendations", json={"history": random.sample(ITEMS, 5), "k": 10})

    @task(1)
    def write_event(self):
        user = f"load{random.randrange(USERS)}"
        self.client.post(f"/users/{user}/events", json={"events": [{"item": random.choice(ITEMS)}]},
                         name="/users/[id]/events")
