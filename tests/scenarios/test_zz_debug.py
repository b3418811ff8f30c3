import time
import pytest
from tests.scenarios.test_events import ALL
from tests.scenarios.support import start, history
pytestmark = pytest.mark.kafka

async def test_dbg(workers, client):
    await workers.start(ALL)
    t0 = time.monotonic()
    handle = await start(client, "EvtWaitTimeoutStep", "evt-13")
    t1 = time.monotonic()
    r = await handle.result(timeout=10)
    t2 = time.monotonic()
    evs = await history(client, handle)
    t3 = time.monotonic()
    print("start", t1-t0, "result", t2-t1, "hist", t3-t2)
    for e in evs:
        print(e.timestamp.isoformat(), e.kind, e.msg)
