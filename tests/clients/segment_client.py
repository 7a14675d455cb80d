"""Send one of each Segment call through the real segment-analytics-python client, gzipped,
to the Wayline server at argv[1] with write key argv[2]. Exits 1 if the client reports an error."""
import sys

import segment.analytics as analytics

failures = []
analytics.host = sys.argv[1]
analytics.write_key = sys.argv[2]
analytics.gzip = True
analytics.max_retries = 0
analytics.on_error = lambda error, items: failures.append(f"{error}: {items}")

analytics.identify(user_id="py-user", anonymous_id="py-visitor",
                   traits={"email": "py@example.com", "plan": "pro", "company": {"size": 600}})
analytics.track(user_id="py-user", event="Signed Up", properties={"plan": "pro"})
analytics.page(user_id="py-user", category="Docs", name="Pricing", properties={"path": "/pricing"})
analytics.screen(user_id="py-user", category="App", name="Home")
analytics.group(user_id="py-user", group_id="acme", traits={"name": "Acme Ltd"})
analytics.alias(previous_id="py-old-device", user_id="py-user")
analytics.flush()
analytics.shutdown()
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
