"""pytest configuration of the Octavia client compatibility suite."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "standalone: needs the Neutron/Keystone lookups the CLI makes on a single noauth "
        "endpoint (klb serves them; Octavia alone does not)",
    )
    config.addinivalue_line(
        "markers",
        "klb_only: klb is stricter than Octavia here on purpose (e.g. noauth admin needs "
        "X-Roles: admin, limit=0 is a 400); deselect when pointing the suite at Octavia",
    )
