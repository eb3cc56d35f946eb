"""pytest configuration of the Octavia client compatibility suite."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "standalone: needs the Neutron/Keystone lookups the CLI makes on a single noauth "
        "endpoint (klb serves them; Octavia alone does not)",
    )
