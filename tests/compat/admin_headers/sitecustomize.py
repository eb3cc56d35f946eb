"""Adds the headers in $KLB_COMPAT_HEADERS (a JSON object) to every HTTP request the process
makes through `requests`.

The `openstack` CLI has no option for extra headers, but klb's noauth makes a caller admin only
with `X-Roles: admin` (unlike Octavia's, where every noauth caller is admin). The compat suite
runs the CLI with this directory on PYTHONPATH for its admin commands, the way an operator's
curl sends the header.
"""

import json
import os

_headers = json.loads(os.environ.get("KLB_COMPAT_HEADERS") or "{}")
if _headers:
    import requests

    _request = requests.Session.request

    def _with_headers(self, method, url, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        headers.update(_headers)
        return _request(self, method, url, headers=headers, **kwargs)

    requests.Session.request = _with_headers
