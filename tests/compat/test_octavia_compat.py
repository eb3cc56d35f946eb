"""Octavia API compatibility: the clients tenants already use, driving `klb serve`.

Run by tests/compat/run.sh, which starts klb (noauth) and sets KLB_ENDPOINT. Two clients:
* the CLI: `openstack --os-auth-type none --os-endpoint URL loadbalancer ... -f json`
  (python-openstackclient + python-octaviaclient), output parsed and asserted;
* openstacksdk: `openstack.connection.Connection(auth_type="none", ...)`, `conn.load_balancer`.
Raw HTTP (urllib) is used only for what neither client exposes (member batch update, error
bodies) and for bounded waits on provisioning_status.

Every test creates what it needs and deletes it again; assertions are on what Octavia returns
(see shared/reference/octavia-api.md), never relaxed to fit the server. The suite was checked
against the real Octavia 19 (octavia-baseline.sh serve, OCTAVIA_DEFAULT_PROJECT set): all tests
pass there except the two marked `standalone`.

`standalone` tests: with `--os-auth-type none --os-endpoint URL` every service the CLI needs is
looked up on that one endpoint. `loadbalancer create --vip-subnet-id` asks Neutron
(`GET URL/v2/subnets?id=...`) and `loadbalancer quota set PROJECT` asks Keystone
(`GET URL/projects/...`). Octavia alone has neither (its deployments have Neutron and Keystone);
klb's README promises this exact CLI usage against `klb serve` alone, so klb must answer those
lookups. Deselect them with `-m "not standalone and not klb_only"` when pointing the suite at
Octavia (`klb_only` tests check where klb is stricter than Octavia on purpose).
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

ENDPOINT = os.environ.get("KLB_ENDPOINT", "http://127.0.0.1:9876")
API = ENDPOINT + "/v2/lbaas"
WAIT_SECONDS = 60
CLI_TIMEOUT = 120


# --------------------------------------------------------------------------- helpers


class CliError(Exception):
    pass


ADMIN_HEADERS = {"X-Roles": "admin"}
HERE = os.path.dirname(os.path.abspath(__file__))


def admin_env():
    """The CLI's environment for admin commands: klb's noauth makes a caller admin only with
    `X-Roles: admin`; admin_headers/sitecustomize.py adds it to the CLI's requests."""
    env = dict(os.environ)
    env["KLB_COMPAT_HEADERS"] = json.dumps(ADMIN_HEADERS)
    env["PYTHONPATH"] = os.path.join(HERE, "admin_headers") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def osc(*args, fmt=True, admin=False):
    """Runs `openstack loadbalancer <args>` (as the admin when admin=True); returns parsed JSON
    (or stdout when fmt=False)."""
    cmd = [
        "openstack",
        "--os-auth-type",
        "none",
        "--os-endpoint",
        ENDPOINT,
        "loadbalancer",
        *args,
    ]
    if fmt:
        cmd += ["-f", "json"]
    env = admin_env() if admin else None
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env)
    if proc.returncode != 0:
        raise CliError(
            f"{' '.join(cmd)} -> exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    if not fmt:
        return proc.stdout
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def osc_fails(*args, admin=False):
    """Runs a CLI command that must fail; returns its combined output for assertions."""
    try:
        out = osc(*args, fmt=False, admin=admin)
    except CliError as err:
        return str(err)
    pytest.fail(f"expected `loadbalancer {' '.join(args)}` to fail, got: {out}")


def http(method, path, body=None, expect=None, admin=False):
    """Raw request to the API root (as the admin when admin=True); returns (status, parsed JSON
    or None)."""
    url = path if path.startswith("http") else ENDPOINT + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    for key, value in (ADMIN_HEADERS if admin else {}).items():
        req.add_header(key, value)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    parsed = json.loads(raw) if raw.strip() else None
    if expect is not None:
        assert status == expect, f"{method} {path}: HTTP {status}, want {expect}: {raw[:500]!r}"
    return status, parsed


def wait_lb(lb_id, status="ACTIVE"):
    """Polls the LB until provisioning_status == status (bounded); returns the LB."""
    deadline = time.monotonic() + WAIT_SECONDS
    last = None
    while time.monotonic() < deadline:
        code, body = http("GET", f"/v2/lbaas/loadbalancers/{lb_id}")
        if code == 200:
            last = body["loadbalancer"]
            if last["provisioning_status"] == status:
                return last
            assert last["provisioning_status"] != "ERROR", f"LB {lb_id} went ERROR: {last}"
        time.sleep(0.1)
    pytest.fail(f"LB {lb_id} not {status} within {WAIT_SECONDS}s; last: {last}")


def wait_gone(path):
    deadline = time.monotonic() + WAIT_SECONDS
    code = None
    while time.monotonic() < deadline:
        code, _ = http("GET", path)
        if code == 404:
            return
        time.sleep(0.1)
    pytest.fail(f"{path} still present (HTTP {code}) after {WAIT_SECONDS}s")


def ids(items):
    return {i["id"] for i in items}


def name():
    return "compat-" + uuid.uuid4().hex[:10]


def fresh_subnet():
    return str(uuid.uuid4())


def api_lb(**extra):
    """Creates an LB through the raw API, waits for ACTIVE; returns it.

    Fixtures create their LB this way: the CLI resolves --vip-subnet-id through Neutron
    (`GET <endpoint>/v2/subnets?id=...` on the same endpoint under noauth), which is tested
    once in test_loadbalancer_crud_cli instead of failing every child-resource test.
    """
    body = {"loadbalancer": {"name": name(), "vip_subnet_id": fresh_subnet(), **extra}}
    code, created = http("POST", "/v2/lbaas/loadbalancers", body)
    assert code == 201, created
    return wait_lb(created["loadbalancer"]["id"])


def cleanup_lb(lb_id):
    """Best-effort cascade delete through the raw API (a fixture's finalizer)."""
    http("DELETE", f"/v2/lbaas/loadbalancers/{lb_id}?cascade=true")


@pytest.fixture
def lb():
    created = api_lb()
    yield created
    cleanup_lb(created["id"])


@pytest.fixture
def listener(lb):
    li = osc(
        "listener", "create", "--name", name(), "--protocol", "HTTP", "--protocol-port", "80",
        "--wait", lb["id"],
    )
    wait_lb(lb["id"])
    return li


@pytest.fixture
def pool(lb, listener):
    p = osc(
        "pool", "create", "--name", name(), "--listener", listener["id"], "--protocol", "HTTP",
        "--lb-algorithm", "ROUND_ROBIN", "--wait",
    )
    wait_lb(lb["id"])
    return p


@pytest.fixture(scope="module")
def provider_name():
    providers = osc("provider", "list")
    assert providers, "provider list is empty"
    return providers[0]["name"]


# --------------------------------------------------------------------------- discovery


def test_version_document():
    code, body = http("GET", "/")
    assert code == 200
    versions = body["versions"]
    assert any(v["status"] == "CURRENT" for v in versions), versions
    for v in versions:
        assert v["id"].startswith("v2"), v
        assert any(link["rel"] == "self" for link in v["links"]), v


def test_not_found_error_body():
    missing = str(uuid.uuid4())
    code, body = http("GET", f"/v2/lbaas/loadbalancers/{missing}")
    assert code == 404
    assert body["faultcode"] == "Client", body
    assert body["faultstring"] == f"Load Balancer {missing} not found.", body
    assert "debuginfo" in body


def test_provider_list_cli():
    providers = osc("provider", "list")
    assert isinstance(providers, list) and providers
    for p in providers:
        assert p["name"] and isinstance(p["description"], str), p
        # Octavia's enabled_provider_drivers is `name:description,...`: no comma can be in one.
        assert "," not in p["description"], p


# --------------------------------------------------------------------------- CLI: load balancer


@pytest.mark.standalone
def test_loadbalancer_crud_cli():
    n, subnet = name(), fresh_subnet()
    created = osc(
        "create", "--name", n, "--description", "d1", "--vip-subnet-id", subnet,
        "--tag", "t1", "--tag", "t2", "--wait",
    )
    lb_id = created["id"]
    try:
        assert created["name"] == n
        assert created["description"] == "d1"
        assert created["vip_subnet_id"] == subnet
        assert created["vip_address"], created
        assert created["admin_state_up"] is True
        assert created["provisioning_status"] in ("ACTIVE", "PENDING_CREATE")
        shown = osc("show", lb_id)
        assert shown["provisioning_status"] == "ACTIVE", shown
        assert shown["id"] == lb_id and shown["name"] == n
        assert sorted(shown["tags"].split(", ") if isinstance(shown["tags"], str) else shown["tags"]) == ["t1", "t2"]
        assert shown["project_id"], shown

        listed = osc("list")
        assert lb_id in ids(listed)
        by_name = osc("list", "--name", n)
        assert [x["id"] for x in by_name] == [lb_id]

        # show by name resolves too (the client lists and filters)
        assert osc("show", n)["id"] == lb_id

        osc("set", "--name", n + "-2", "--description", "d2", "--wait", lb_id, fmt=False)
        shown = osc("show", lb_id)
        assert shown["name"] == n + "-2" and shown["description"] == "d2"
        assert shown["provisioning_status"] == "ACTIVE"

        osc("set", "--disable", "--wait", lb_id, fmt=False)
        assert osc("show", lb_id)["admin_state_up"] is False

        osc("unset", "--description", "--wait", lb_id, fmt=False)
        assert osc("show", lb_id)["description"] in (None, "")
    finally:
        osc("delete", "--wait", lb_id, fmt=False)
    out = osc_fails("show", lb_id)
    assert "Unable to locate" in out or "not found" in out.lower(), out
    assert lb_id not in ids(osc("list"))


def test_loadbalancer_stats_and_status_cli(lb, listener, pool):
    stats = osc("stats", "show", lb["id"])
    for key in ("bytes_in", "bytes_out", "active_connections", "total_connections", "request_errors"):
        assert isinstance(stats[key], int), (key, stats)
    status = osc("status", "show", lb["id"], fmt=False)
    tree = json.loads(status)["loadbalancer"]
    assert tree["id"] == lb["id"]
    assert tree["provisioning_status"] == "ACTIVE"
    assert [li["id"] for li in tree["listeners"]] == [listener["id"]]
    assert [p["id"] for p in tree["listeners"][0]["pools"]] == [pool["id"]]


def test_loadbalancer_delete_with_children_needs_cascade(lb, listener):
    code, body = http("DELETE", f"/v2/lbaas/loadbalancers/{lb['id']}")
    assert code == 400, body
    assert body["faultstring"] == (
        f"Validation failure: Cannot delete Load Balancer {lb['id']} - it has children"
    ), body
    assert osc("show", lb["id"])["provisioning_status"] == "ACTIVE"


def test_loadbalancer_cascade_delete_cli():
    lb_ = api_lb()
    li = osc("listener", "create", "--protocol", "HTTP", "--protocol-port", "8080", "--wait", lb_["id"])
    p = osc("pool", "create", "--listener", li["id"], "--protocol", "HTTP",
            "--lb-algorithm", "ROUND_ROBIN", "--wait")
    m = osc("member", "create", "--address", "192.0.2.10", "--protocol-port", "80", "--wait", p["id"])
    hm = osc("healthmonitor", "create", "--delay", "5", "--timeout", "3", "--max-retries", "3",
             "--type", "TCP", "--wait", p["id"])
    osc("delete", "--cascade", "--wait", lb_["id"], fmt=False)
    for path in (
        f"/v2/lbaas/loadbalancers/{lb_['id']}",
        f"/v2/lbaas/listeners/{li['id']}",
        f"/v2/lbaas/pools/{p['id']}",
        f"/v2/lbaas/pools/{p['id']}/members/{m['id']}",
        f"/v2/lbaas/healthmonitors/{hm['id']}",
    ):
        code, _ = http("GET", path)
        assert code == 404, (path, code)
    assert lb_["id"] not in ids(osc("list"))


# --------------------------------------------------------------------------- CLI: children


def test_listener_crud_cli(lb):
    n = name()
    li = osc("listener", "create", "--name", n, "--protocol", "HTTP", "--protocol-port", "80",
             "--insert-headers", "X-Forwarded-For=true", "--wait", lb["id"])
    assert li["name"] == n and li["protocol"] == "HTTP" and li["protocol_port"] == 80
    assert wait_lb(lb["id"])["provisioning_status"] == "ACTIVE"
    shown = osc("listener", "show", li["id"])
    assert shown["provisioning_status"] == "ACTIVE", shown
    assert shown["connection_limit"] == -1
    assert shown["timeout_client_data"] == 50000 and shown["timeout_member_connect"] == 5000
    assert shown["loadbalancers"] == lb["id"] or lb["id"] in str(shown["loadbalancers"])
    assert li["id"] in ids(osc("listener", "list", "--loadbalancer", lb["id"]))

    osc("listener", "set", "--name", n + "-2", "--connection-limit", "100", "--wait", li["id"], fmt=False)
    shown = osc("listener", "show", li["id"])
    assert shown["name"] == n + "-2" and shown["connection_limit"] == 100

    stats = osc("listener", "stats", "show", li["id"])
    assert isinstance(stats["total_connections"], int)

    # Same protocol family + port on the same LB -> 409 DuplicateListenerEntry
    out = osc_fails("listener", "create", "--protocol", "TCP", "--protocol-port", "80", lb["id"])
    assert "already using protocol" in out or "409" in out, out
    wait_lb(lb["id"])

    osc("listener", "delete", "--wait", li["id"], fmt=False)
    assert li["id"] not in ids(osc("listener", "list"))
    assert wait_lb(lb["id"])["listeners"] == []


def test_pool_crud_cli(lb, listener):
    n = name()
    p = osc("pool", "create", "--name", n, "--listener", listener["id"], "--protocol", "HTTP",
            "--lb-algorithm", "ROUND_ROBIN", "--session-persistence", "type=APP_COOKIE,cookie_name=sess",
            "--wait")
    assert p["name"] == n and p["lb_algorithm"] == "ROUND_ROBIN" and p["protocol"] == "HTTP"
    shown = osc("pool", "show", p["id"])
    assert shown["provisioning_status"] == "ACTIVE", shown
    assert "APP_COOKIE" in str(shown["session_persistence"]) and "sess" in str(shown["session_persistence"])
    assert osc("listener", "show", listener["id"])["default_pool_id"] == p["id"]
    assert p["id"] in ids(osc("pool", "list", "--loadbalancer", lb["id"]))

    osc("pool", "set", "--lb-algorithm", "LEAST_CONNECTIONS", "--name", n + "-2", "--wait", p["id"], fmt=False)
    shown = osc("pool", "show", p["id"])
    assert shown["lb_algorithm"] == "LEAST_CONNECTIONS" and shown["name"] == n + "-2"

    # A listener has one default pool -> 409 DuplicatePoolEntry
    out = osc_fails("pool", "create", "--listener", listener["id"], "--protocol", "HTTP",
                    "--lb-algorithm", "ROUND_ROBIN")
    assert "already has a default pool" in out or "409" in out, out
    wait_lb(lb["id"])

    osc("pool", "delete", "--wait", p["id"], fmt=False)
    assert p["id"] not in ids(osc("pool", "list"))
    assert osc("listener", "show", listener["id"])["default_pool_id"] in (None, "")


def test_member_crud_cli(lb, pool):
    n = name()
    m = osc("member", "create", "--name", n, "--address", "192.0.2.10", "--protocol-port", "8080",
            "--weight", "5", "--wait", pool["id"])
    assert m["address"] == "192.0.2.10" and m["protocol_port"] == 8080 and m["weight"] == 5
    wait_lb(lb["id"])
    shown = osc("member", "show", pool["id"], m["id"])
    assert shown["provisioning_status"] == "ACTIVE", shown
    assert shown["operating_status"] == "NO_MONITOR", shown
    assert shown["backup"] is False
    assert [x["id"] for x in osc("member", "list", pool["id"])] == [m["id"]]

    osc("member", "set", "--weight", "10", "--name", n + "-2", "--enable-backup", "--wait",
        pool["id"], m["id"], fmt=False)
    shown = osc("member", "show", pool["id"], m["id"])
    assert shown["weight"] == 10 and shown["name"] == n + "-2" and shown["backup"] is True

    # (address, protocol_port) unique per pool -> 409 DuplicateMemberEntry
    out = osc_fails("member", "create", "--address", "192.0.2.10", "--protocol-port", "8080", pool["id"])
    assert "already using ip" in out or "409" in out, out
    wait_lb(lb["id"])

    osc("member", "delete", "--wait", pool["id"], m["id"], fmt=False)
    assert osc("member", "list", pool["id"]) == []


def test_member_batch_update_raw(lb, pool):
    base = f"/v2/lbaas/pools/{pool['id']}/members"
    body = {"members": [
        {"address": "192.0.2.21", "protocol_port": 80, "weight": 1},
        {"address": "192.0.2.22", "protocol_port": 80, "weight": 2},
        {"address": "192.0.2.23", "protocol_port": 80, "weight": 3, "name": "third"},
    ]}
    http("PUT", base, body, expect=202)
    wait_lb(lb["id"])
    _, listed = http("GET", base, expect=200)
    got = {(m["address"], m["protocol_port"]): m for m in listed["members"]}
    assert set(got) == {("192.0.2.21", 80), ("192.0.2.22", 80), ("192.0.2.23", 80)}
    assert got[("192.0.2.23", 80)]["weight"] == 3 and got[("192.0.2.23", 80)]["name"] == "third"
    kept_id = got[("192.0.2.22", 80)]["id"]

    # Replace: .21 removed, .22 updated in place (same id), .24 created.
    body = {"members": [
        {"address": "192.0.2.22", "protocol_port": 80, "weight": 7},
        {"address": "192.0.2.23", "protocol_port": 80, "weight": 3, "name": "third"},
        {"address": "192.0.2.24", "protocol_port": 80},
    ]}
    http("PUT", base, body, expect=202)
    wait_lb(lb["id"])
    _, listed = http("GET", base, expect=200)
    got = {(m["address"], m["protocol_port"]): m for m in listed["members"]}
    assert set(got) == {("192.0.2.22", 80), ("192.0.2.23", 80), ("192.0.2.24", 80)}
    assert got[("192.0.2.22", 80)]["id"] == kept_id
    assert got[("192.0.2.22", 80)]["weight"] == 7
    assert all(m["provisioning_status"] == "ACTIVE" for m in listed["members"]), listed

    # additive_only keeps members missing from the list
    http("PUT", base + "?additive_only=true",
         {"members": [{"address": "192.0.2.25", "protocol_port": 80}]}, expect=202)
    wait_lb(lb["id"])
    _, listed = http("GET", base, expect=200)
    assert len(listed["members"]) == 4

    # an existing member twice in one request -> 400 (Octavia's ValidationException)
    dup = {"members": [{"address": "192.0.2.22", "protocol_port": 80, "weight": 1}] * 2}
    code, err = http("PUT", base + "?additive_only=true", dup)
    assert code == 400, err
    assert err["faultstring"] == (
        "Validation failure: Member must be updated only once in the same request."
    ), err
    # the same new member twice -> 409 DuplicateMemberEntry (what Octavia 19 answers)
    dup = {"members": [{"address": "192.0.2.30", "protocol_port": 80}] * 2}
    code, err = http("PUT", base + "?additive_only=true", dup)
    assert code == 409, err
    assert err["faultstring"] == (
        "Another member on this pool is already using ip 192.0.2.30 on protocol_port 80"
    ), err
    wait_lb(lb["id"])
    _, listed = http("GET", base, expect=200)
    assert len(listed["members"]) == 4, listed


def test_healthmonitor_crud_cli(lb, pool):
    n = name()
    hm = osc("healthmonitor", "create", "--name", n, "--delay", "5", "--timeout", "3",
             "--max-retries", "3", "--type", "HTTP", "--url-path", "/healthz",
             "--expected-codes", "200,202", "--wait", pool["id"])
    assert hm["type"] == "HTTP" and hm["delay"] == 5 and hm["timeout"] == 3 and hm["max_retries"] == 3
    wait_lb(lb["id"])
    shown = osc("healthmonitor", "show", hm["id"])
    assert shown["provisioning_status"] == "ACTIVE", shown
    assert shown["url_path"] == "/healthz" and shown["expected_codes"] == "200,202"
    assert shown["http_method"] == "GET" and shown["max_retries_down"] == 3
    assert osc("pool", "show", pool["id"])["healthmonitor_id"] == hm["id"]
    assert hm["id"] in ids(osc("healthmonitor", "list"))

    osc("healthmonitor", "set", "--delay", "10", "--name", n + "-2", "--wait", hm["id"], fmt=False)
    shown = osc("healthmonitor", "show", hm["id"])
    assert shown["delay"] == 10 and shown["name"] == n + "-2"

    out = osc_fails("healthmonitor", "create", "--delay", "5", "--timeout", "3", "--max-retries", "3",
                    "--type", "TCP", pool["id"])
    assert "already has a health monitor" in out or "409" in out, out
    wait_lb(lb["id"])

    osc("healthmonitor", "delete", "--wait", hm["id"], fmt=False)
    assert hm["id"] not in ids(osc("healthmonitor", "list"))
    assert osc("pool", "show", pool["id"])["healthmonitor_id"] in (None, "")


def test_l7policy_and_l7rule_crud_cli(lb, listener, pool):
    n = name()
    pol = osc("l7policy", "create", "--name", n, "--action", "REDIRECT_TO_URL",
              "--redirect-url", "http://www.example.com/", "--wait", listener["id"])
    assert pol["action"] == "REDIRECT_TO_URL" and pol["redirect_url"] == "http://www.example.com/"
    wait_lb(lb["id"])
    shown = osc("l7policy", "show", pol["id"])
    assert shown["provisioning_status"] == "ACTIVE", shown
    assert shown["position"] == 1 and shown["redirect_http_code"] == 302
    assert pol["id"] in ids(osc("l7policy", "list"))

    rule = osc("l7rule", "create", "--type", "PATH", "--compare-type", "STARTS_WITH",
               "--value", "/api", "--wait", pol["id"])
    assert rule["type"] == "PATH" and rule["compare_type"] == "STARTS_WITH" and rule["value"] == "/api"
    wait_lb(lb["id"])
    shown_rule = osc("l7rule", "show", pol["id"], rule["id"])
    assert shown_rule["provisioning_status"] == "ACTIVE" and shown_rule["invert"] is False
    assert [r["id"] for r in osc("l7rule", "list", pol["id"])] == [rule["id"]]

    osc("l7rule", "set", "--value", "/v2", "--invert", "--wait", pol["id"], rule["id"], fmt=False)
    shown_rule = osc("l7rule", "show", pol["id"], rule["id"])
    assert shown_rule["value"] == "/v2" and shown_rule["invert"] is True

    # a header rule without a key is invalid
    out = osc_fails("l7rule", "create", "--type", "HEADER", "--compare-type", "EQUAL_TO",
                    "--value", "x", pol["id"])
    assert "400" in out or "L7Rule" in out or "key" in out, out
    wait_lb(lb["id"])

    osc("l7policy", "set", "--action", "REDIRECT_TO_POOL", "--redirect-pool", pool["id"], "--wait",
        pol["id"], fmt=False)
    shown = osc("l7policy", "show", pol["id"])
    assert shown["action"] == "REDIRECT_TO_POOL" and shown["redirect_pool_id"] == pool["id"]
    assert shown["redirect_url"] in (None, "")

    # a pool used by an L7 policy cannot be deleted -> 409 PoolInUseByL7Policy
    out = osc_fails("pool", "delete", pool["id"])
    assert "in use by L7 policy" in out or "409" in out, out
    wait_lb(lb["id"])

    osc("l7rule", "delete", "--wait", pol["id"], rule["id"], fmt=False)
    assert osc("l7rule", "list", pol["id"]) == []
    osc("l7policy", "delete", "--wait", pol["id"], fmt=False)
    assert pol["id"] not in ids(osc("l7policy", "list"))


# --------------------------------------------------------------------------- CLI: admin


@pytest.mark.klb_only
def test_admin_commands_need_the_admin_role(provider_name):
    """klb's noauth (unlike Octavia's) makes a caller admin only with X-Roles: admin."""
    out = osc_fails("flavorprofile", "create", "--name", name(), "--provider", provider_name,
                    "--flavor-data", "{}")
    assert "403" in out or "Policy does not allow" in out, out
    code, body = http("PUT", f"/v2/lbaas/quotas/{uuid.uuid4().hex}", {"quota": {"loadbalancer": 7}})
    assert code == 403, body
    code, body = http("GET", "/v2/lbaas/loadbalancers", admin=False)
    assert code == 200, body
    code, body = http("GET", "/v2/lbaas/loadbalancers?limit=0")
    assert code == 400, body


def test_quota_cli():
    """show / list / defaults with the CLI; set and reset go through the raw API (the CLI's
    `quota set/unset/reset` look the project up in Keystone: see test_quota_set_cli)."""
    project = uuid.uuid4().hex
    defaults = osc("quota", "defaults", "show", admin=True)
    for key in ("load_balancer", "listener", "pool", "health_monitor", "member", "l7policy", "l7rule"):
        assert key in defaults, defaults
    before = osc("quota", "show", project, admin=True)
    assert before["load_balancer"] == defaults["load_balancer"]

    code, body = http("PUT", f"/v2/lbaas/quotas/{project}", {"quota": {"loadbalancer": 7, "member": 70}}, admin=True)
    assert code == 202, body
    assert body["quota"]["load_balancer"] == 7 and body["quota"]["member"] == 70, body
    shown = osc("quota", "show", project, admin=True)
    assert shown["load_balancer"] == 7 and shown["member"] == 70
    assert shown["listener"] == defaults["listener"]
    listed = osc("quota", "list", admin=True)
    assert any(q["project_id"] == project and q["load_balancer"] == 7 for q in listed), listed

    code, _ = http("DELETE", f"/v2/lbaas/quotas/{project}", admin=True)
    assert code == 202
    shown = osc("quota", "show", project, admin=True)
    assert shown["load_balancer"] == defaults["load_balancer"] and shown["member"] == defaults["member"]


@pytest.mark.standalone
def test_quota_set_cli():
    project = uuid.uuid4().hex
    defaults = osc("quota", "defaults", "show", admin=True)
    try:
        osc("quota", "set", "--loadbalancer", "5", "--pool", "9", project, fmt=False, admin=True)
        shown = osc("quota", "show", project, admin=True)
        assert shown["load_balancer"] == 5 and shown["pool"] == 9, shown
        osc("quota", "unset", "--pool", project, fmt=False, admin=True)
        assert osc("quota", "show", project, admin=True)["pool"] == defaults["pool"]
        osc("quota", "reset", project, fmt=False, admin=True)
        assert osc("quota", "show", project, admin=True)["load_balancer"] == defaults["load_balancer"]
    finally:
        http("DELETE", f"/v2/lbaas/quotas/{project}", admin=True)

# Quota enforcement is not tested here: under noauth Octavia skips quota checks entirely
# ("Under noauth everything is admin, so no quota", db/repositories.py check_quota_met).


def test_flavorprofile_and_flavor_crud_cli(provider_name):
    fp = osc("flavorprofile", "create", "--name", name(), "--provider", provider_name,
             "--flavor-data", "{}", admin=True)
    assert fp["provider_name"] == provider_name and json.loads(fp["flavor_data"]) == {}
    assert fp["id"] in ids(osc("flavorprofile", "list", admin=True))
    fp_name = name()
    osc("flavorprofile", "set", "--name", fp_name, fp["id"], fmt=False, admin=True)
    assert osc("flavorprofile", "show", fp["id"], admin=True)["name"] == fp_name

    fn = name()
    fl = osc("flavor", "create", "--name", fn, "--flavorprofile", fp["id"], "--description", "small",
             "--enable", admin=True)
    try:
        assert fl["name"] == fn and fl["flavor_profile_id"] == fp["id"] and fl["enabled"] is True
        shown = osc("flavor", "show", fl["id"], admin=True)
        assert shown["description"] == "small"
        assert fl["id"] in ids(osc("flavor", "list", admin=True))
        osc("flavor", "set", "--disable", "--name", fn + "-2", fl["id"], fmt=False, admin=True)
        shown = osc("flavor", "show", fl["id"], admin=True)
        assert shown["enabled"] is False and shown["name"] == fn + "-2"
        # name is unique -> 409
        out = osc_fails("flavor", "create", "--name", fn + "-2", "--flavorprofile", fp["id"], admin=True)
        assert "already exists" in out or "409" in out, out
        # a profile in use cannot be deleted -> 409
        out = osc_fails("flavorprofile", "delete", fp["id"], admin=True)
        assert "in use" in out or "409" in out, out
    finally:
        osc("flavor", "delete", fl["id"], fmt=False, admin=True)
    assert fl["id"] not in ids(osc("flavor", "list", admin=True))
    osc("flavorprofile", "delete", fp["id"], fmt=False, admin=True)
    assert fp["id"] not in ids(osc("flavorprofile", "list", admin=True))


def test_loadbalancer_with_flavor(provider_name):
    fp = osc("flavorprofile", "create", "--name", name(), "--provider", provider_name, "--flavor-data", "{}", admin=True)
    fl = osc("flavor", "create", "--name", name(), "--flavorprofile", fp["id"], "--enable", admin=True)
    try:
        lb_ = api_lb(flavor_id=fl["id"])
        try:
            assert lb_["flavor_id"] == fl["id"], lb_
            out = osc_fails("flavor", "delete", fl["id"], admin=True)
            assert "in use" in out.lower() or "409" in out, out
        finally:
            osc("delete", "--wait", lb_["id"], fmt=False, admin=True)
    finally:
        http("DELETE", f"/v2/lbaas/flavors/{fl['id']}", admin=True)
        http("DELETE", f"/v2/lbaas/flavorprofiles/{fp['id']}", admin=True)


def test_availabilityzone_crud_cli(provider_name):
    azp = osc("availabilityzoneprofile", "create", "--name", name(), "--provider", provider_name,
              "--availability-zone-data", "{}", admin=True)
    assert azp["provider_name"] == provider_name and json.loads(azp["availability_zone_data"]) == {}
    assert azp["id"] in ids(osc("availabilityzoneprofile", "list", admin=True))
    azn = name()
    az = osc("availabilityzone", "create", "--name", azn, "--availabilityzoneprofile", azp["id"],
             "--description", "zone a", admin=True)
    try:
        assert az["name"] == azn and az["availability_zone_profile_id"] == azp["id"]
        assert az["enabled"] is True
        shown = osc("availabilityzone", "show", azn, admin=True)
        assert shown["description"] == "zone a"
        assert azn in {x["name"] for x in osc("availabilityzone", "list", admin=True)}
        osc("availabilityzone", "set", "--description", "zone b", "--disable", azn, fmt=False, admin=True)
        shown = osc("availabilityzone", "show", azn, admin=True)
        assert shown["description"] == "zone b" and shown["enabled"] is False
    finally:
        osc("availabilityzone", "delete", azn, fmt=False, admin=True)
    assert azn not in {x["name"] for x in osc("availabilityzone", "list", admin=True)}
    osc("availabilityzoneprofile", "delete", azp["id"], fmt=False, admin=True)
    assert azp["id"] not in ids(osc("availabilityzoneprofile", "list", admin=True))


def test_amphora_list_cli(lb):
    amps = osc("amphora", "list", admin=True)
    assert isinstance(amps, list)
    mine = osc("amphora", "list", "--loadbalancer", lb["id"], admin=True)
    assert isinstance(mine, list)
    for a in mine:
        assert a["id"] and a["status"], a
        assert a["loadbalancer_id"] == lb["id"], a
        assert ids([a]) <= ids(amps)


# --------------------------------------------------------------------------- openstacksdk


@pytest.fixture(scope="module")
def conn():
    import openstack

    conn = openstack.connection.Connection(
        auth_type="none",
        auth={"endpoint": ENDPOINT},
        load_balancer_endpoint_override=ENDPOINT,
    )
    # The SDK tests also do admin things (quotas, flavors, AZs, amphorae): klb's noauth makes
    # a caller admin only with X-Roles: admin.
    conn.session.additional_headers.update(ADMIN_HEADERS)
    return conn


@pytest.fixture(scope="module")
def kms():
    """openstacksdk's key-manager (Barbican) proxy pointed at klb's own secret store."""
    import openstack

    return openstack.connection.Connection(
        auth_type="none",
        auth={"endpoint": ENDPOINT},
        key_manager_endpoint_override=ENDPOINT + "/v1",
    ).key_manager


def sdk_wait(conn, lb_id):
    return conn.load_balancer.wait_for_load_balancer(
        lb_id, status="ACTIVE", failures=["ERROR"], interval=0.1, wait=WAIT_SECONDS
    )


def test_sdk_full_lifecycle(conn):
    lbp = conn.load_balancer
    n = name()
    subnet = fresh_subnet()
    lb_ = lbp.create_load_balancer(name=n, vip_subnet_id=subnet, description="sdk")
    try:
        assert lb_.name == n and lb_.vip_subnet_id == subnet
        lb_ = sdk_wait(conn, lb_.id)
        assert lb_.provisioning_status == "ACTIVE"
        assert lbp.get_load_balancer(lb_.id).description == "sdk"
        assert lbp.find_load_balancer(n).id == lb_.id
        assert lb_.id in {x.id for x in lbp.load_balancers()}

        lbp.update_load_balancer(lb_.id, name=n + "-2")
        lb_ = sdk_wait(conn, lb_.id)
        assert lb_.name == n + "-2"

        li = lbp.create_listener(loadbalancer_id=lb_.id, protocol="HTTP", protocol_port=80, name="l1")
        sdk_wait(conn, lb_.id)
        assert lbp.get_listener(li.id).provisioning_status == "ACTIVE"
        lbp.update_listener(li.id, connection_limit=42)
        sdk_wait(conn, lb_.id)
        assert lbp.get_listener(li.id).connection_limit == 42

        pool = lbp.create_pool(listener_id=li.id, protocol="HTTP", lb_algorithm="ROUND_ROBIN", name="p1")
        sdk_wait(conn, lb_.id)
        assert lbp.get_pool(pool.id).provisioning_status == "ACTIVE"
        lbp.update_pool(pool.id, lb_algorithm="SOURCE_IP")
        sdk_wait(conn, lb_.id)
        assert lbp.get_pool(pool.id).lb_algorithm == "SOURCE_IP"

        member_subnet = fresh_subnet()
        m = lbp.create_member(pool, address="192.0.2.50", protocol_port=8080, weight=3,
                              subnet_id=member_subnet)
        sdk_wait(conn, lb_.id)
        assert [x.id for x in lbp.members(pool)] == [m.id]
        assert lbp.get_member(m, pool).subnet_id == member_subnet
        lbp.update_member(m, pool, weight=9)
        sdk_wait(conn, lb_.id)
        assert lbp.get_member(m, pool).weight == 9

        hm = lbp.create_health_monitor(pool_id=pool.id, type="HTTP", delay=5, timeout=3,
                                       max_retries=2, url_path="/ping")
        sdk_wait(conn, lb_.id)
        assert lbp.get_health_monitor(hm.id).url_path == "/ping"
        lbp.update_health_monitor(hm.id, delay=7)
        sdk_wait(conn, lb_.id)
        assert lbp.get_health_monitor(hm.id).delay == 7

        pol = lbp.create_l7_policy(listener_id=li.id, action="REJECT", name="deny")
        sdk_wait(conn, lb_.id)
        rule = lbp.create_l7_rule(pol, type="HOST_NAME", compare_type="EQUAL_TO",
                                  rule_value="bad.example.com")
        sdk_wait(conn, lb_.id)
        assert lbp.get_l7_rule(rule, pol).rule_value == "bad.example.com"
        lbp.update_l7_rule(rule, pol, rule_value="worse.example.com")
        sdk_wait(conn, lb_.id)
        assert lbp.get_l7_rule(rule, pol).rule_value == "worse.example.com"
        lbp.update_l7_policy(pol.id, position=1, name="deny2")
        sdk_wait(conn, lb_.id)
        assert lbp.get_l7_policy(pol.id).name == "deny2"

        stats = lbp.get_load_balancer_statistics(lb_.id)
        assert stats.total_connections is not None and stats.bytes_in is not None

        lbp.delete_l7_rule(rule, pol)
        sdk_wait(conn, lb_.id)
        lbp.delete_l7_policy(pol.id)
        sdk_wait(conn, lb_.id)
        lbp.delete_health_monitor(hm.id)
        sdk_wait(conn, lb_.id)
        lbp.delete_member(m, pool)
        sdk_wait(conn, lb_.id)
        assert list(lbp.members(pool)) == []
        lbp.delete_pool(pool.id)
        sdk_wait(conn, lb_.id)
        lbp.delete_listener(li.id)
        sdk_wait(conn, lb_.id)
        assert lbp.find_listener(li.id) is None
    finally:
        lbp.delete_load_balancer(lb_.id, cascade=True)
    lbp.wait_for_delete(lb_, interval=0.1, wait=WAIT_SECONDS)
    assert lbp.find_load_balancer(lb_.id) is None


def test_sdk_cascade_delete(conn):
    lbp = conn.load_balancer
    lb_ = lbp.create_load_balancer(name=name(), vip_subnet_id=fresh_subnet())
    sdk_wait(conn, lb_.id)
    li = lbp.create_listener(loadbalancer_id=lb_.id, protocol="TCP", protocol_port=443)
    sdk_wait(conn, lb_.id)
    pool = lbp.create_pool(listener_id=li.id, protocol="TCP", lb_algorithm="ROUND_ROBIN")
    sdk_wait(conn, lb_.id)
    lbp.delete_load_balancer(lb_.id, cascade=True)
    lbp.wait_for_delete(lb_, interval=0.1, wait=WAIT_SECONDS)
    assert lbp.find_listener(li.id) is None
    assert lbp.find_pool(pool.id) is None


def test_sdk_quota(conn):
    lbp = conn.load_balancer
    project = uuid.uuid4().hex
    lbp.update_quota(project, load_balancers=11, pools=33)
    q = lbp.get_quota(project)
    assert q.load_balancers == 11 and q.pools == 33
    assert project in {x.project_id for x in lbp.quotas()}
    lbp.delete_quota(project)
    default = lbp.get_quota_default()
    q = lbp.get_quota(project)
    assert q.load_balancers == default.load_balancers


def test_sdk_providers_flavors_azs_amphorae(conn):
    lbp = conn.load_balancer
    providers = list(lbp.providers())
    assert providers and all(p.name for p in providers)
    provider = providers[0].name

    fp = lbp.create_flavor_profile(name=name(), provider_name=provider, flavor_data="{}")
    fl = lbp.create_flavor(name=name(), flavor_profile_id=fp.id, enabled=True)
    assert lbp.get_flavor(fl.id).flavor_profile_id == fp.id
    lbp.update_flavor(fl.id, description="via sdk")
    assert lbp.get_flavor(fl.id).description == "via sdk"
    assert fl.id in {x.id for x in lbp.flavors()}
    lbp.delete_flavor(fl.id)
    lbp.delete_flavor_profile(fp.id)
    assert lbp.find_flavor(fl.id) is None and lbp.find_flavor_profile(fp.id) is None

    azp = lbp.create_availability_zone_profile(name=name(), provider_name=provider,
                                               availability_zone_data="{}")
    azn = name()
    az = lbp.create_availability_zone(name=azn, availability_zone_profile_id=azp.id)
    assert az.name == azn
    assert lbp.get_availability_zone(azn).availability_zone_profile_id == azp.id
    lbp.update_availability_zone(azn, description="via sdk")
    assert lbp.get_availability_zone(azn).description == "via sdk"
    lbp.delete_availability_zone(azn)
    lbp.delete_availability_zone_profile(azp.id)
    assert azn not in {x.name for x in lbp.availability_zones()}

    amphorae = list(lbp.amphorae())
    assert all(a.id for a in amphorae)


# --------------------------------------------------------------------------- TLS refs


def test_sdk_secret_store_and_terminated_https_listener_cli(kms, lb):
    """A tenant stores a certificate bundle with openstacksdk's key-manager proxy (as with
    Barbican) and hands the secret ref to a TERMINATED_HTTPS listener with the CLI."""
    import base64

    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    secret = kms.create_secret(name=name(), payload=pem, payload_content_type="text/plain",
                               secret_type="opaque")
    ref = secret.secret_ref
    assert ref.startswith(ENDPOINT + "/v1/secrets/"), ref
    secret_id = ref.rsplit("/", 1)[1]
    assert secret.name in {s.name for s in kms.secrets()}
    assert kms.get_secret(secret_id).payload == pem
    binary = kms.create_secret(name=name(), payload=base64.b64encode(b"\x00\x01").decode(),
                               payload_content_type="application/octet-stream",
                               payload_content_encoding="base64")
    binary_id = binary.secret_ref.rsplit("/", 1)[1]
    assert kms.get_secret(binary_id).payload_content_type in (None, "application/octet-stream")

    li = osc("listener", "create", "--protocol", "TERMINATED_HTTPS", "--protocol-port", "443",
             "--default-tls-container-ref", ref, "--sni-container-refs", ref, "--wait", lb["id"])
    shown = osc("listener", "show", li["id"])
    assert shown["default_tls_container_ref"] == ref
    assert ref in str(shown["sni_container_refs"])
    osc("listener", "delete", "--wait", li["id"], fmt=False)

    kms.delete_secret(secret_id)
    kms.delete_secret(binary_id)
    code, _ = http("GET", f"/v1/secrets/{secret_id}")
    assert code == 404


# --------------------------------------------------------------------------- conformance (issue 12)


def test_updated_at_set_by_provisioning_cli_and_sdk(conn, lb, listener):
    """Octavia sets updated_at on every write of a row, the provider's ACTIVE included."""
    shown = osc("show", lb["id"])
    assert shown["provisioning_status"] == "ACTIVE" and shown["updated_at"], shown
    shown = osc("listener", "show", listener["id"])
    assert shown["provisioning_status"] == "ACTIVE" and shown["updated_at"], shown
    lbp = conn.load_balancer
    lb_ = lbp.create_load_balancer(name=name(), vip_subnet_id=fresh_subnet())
    try:
        assert lb_.updated_at is None  # the create reply: the row was only inserted
        lb_ = sdk_wait(conn, lb_.id)
        assert lb_.updated_at, lb_
        assert lbp.get_load_balancer(lb_.id).updated_at >= lb_.created_at
    finally:
        lbp.delete_load_balancer(lb_.id, cascade=True)


def test_listener_allowed_cidrs_must_match_vip_ip_version_cli_and_sdk(conn, lb):
    vip = lb["vip_address"]
    out = osc_fails("listener", "create", "--protocol", "TCP", "--protocol-port", "81",
                    "--allowed-cidr", "192.0.1.0/24", "--allowed-cidr", "2001:db8:a0b:12f0::/64",
                    lb["id"])
    assert (f"CIDR 2001:db8:a0b:12f0::/64 IP version incompatible with all VIPs ['{vip}'] "
            "IP version.") in out, out
    import openstack.exceptions

    with pytest.raises(openstack.exceptions.BadRequestException) as err:
        conn.load_balancer.create_listener(loadbalancer_id=lb["id"], protocol="TCP",
                                           protocol_port=81, allowed_cidrs=["::/0"])
    assert f"CIDR ::/0 IP version incompatible with all VIPs ['{vip}'] IP version." in str(err.value)
    wait_lb(lb["id"])
    li = osc("listener", "create", "--protocol", "TCP", "--protocol-port", "81",
             "--allowed-cidr", "192.0.1.0/24", "--wait", lb["id"])
    assert "192.0.1.0/24" in str(li["allowed_cidrs"]), li


def test_sdk_default_sort_orders(conn, lb, listener):
    """Flavors have no created_at in Octavia and list by id; L7 policies list by created_at
    (not by position) like every object with timestamps."""
    lbp = conn.load_balancer
    provider = next(iter(lbp.providers())).name
    fp = lbp.create_flavor_profile(name=name(), provider_name=provider, flavor_data="{}")
    mine = [lbp.create_flavor(name=name(), flavor_profile_id=fp.id).id for _ in range(5)]
    try:
        assert [f.id for f in lbp.flavors() if f.id in mine] == sorted(mine)
    finally:
        for f in mine:
            lbp.delete_flavor(f)
        lbp.delete_flavor_profile(fp.id)

    created = []
    for _ in range(3):
        created.append(lbp.create_l7_policy(listener_id=listener["id"], action="REJECT",
                                            position=1).id)
        sdk_wait(conn, lb["id"])
    listed = list(lbp.l7_policies(listener_id=listener["id"]))
    assert [p.id for p in listed] == created
    assert [p.position for p in listed] == [3, 2, 1]


def test_sdk_child_lists_with_parent_filters(conn, lb, listener, pool):
    """openstacksdk repeats the parent as a query filter (`l7_rules(policy)` sends
    `?l7policy_id=`); Octavia accepts every attribute of its data model as a filter."""
    lbp = conn.load_balancer
    pol = lbp.create_l7_policy(listener_id=listener["id"], action="REJECT")
    sdk_wait(conn, lb["id"])
    rule = lbp.create_l7_rule(pol, type="PATH", compare_type="STARTS_WITH", rule_value="/x")
    sdk_wait(conn, lb["id"])
    assert [r.id for r in lbp.l7_rules(pol)] == [rule.id]
    assert [x.id for x in lbp.listeners(load_balancer_id=lb["id"])] == [listener["id"]]
    m = lbp.create_member(pool["id"], address="192.0.2.60", protocol_port=80)
    sdk_wait(conn, lb["id"])
    assert [x.id for x in lbp.members(pool["id"])] == [m.id]
    assert [x.id for x in lbp.health_monitors(pool_id=pool["id"])] == []


def test_oversized_body_gets_413_with_requests():
    """Python's requests sends the whole body without waiting for 100 Continue: the 413 must
    reach it (not a reset or a broken pipe while it is still sending)."""
    import requests

    body = b" " * (20 * 1024 * 1024)
    resp = requests.post(API + "/loadbalancers", data=body, timeout=60,
                         headers={"Content-Type": "application/json",
                                  "Accept": "application/json"})
    assert resp.status_code == 413, resp.text[:500]
