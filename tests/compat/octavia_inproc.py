"""The real Octavia API and its v2 controller worker in one process, for benchmarks.

Used by tests/compat/octavia-baseline.sh. The API is Octavia's own WSGI application
(`octavia.api.app.setup_app`) served by a threading wsgiref server; the worker is Octavia's own
RPC endpoint (`octavia.controller.queue.v2.endpoints.Endpoints`) on oslo.messaging's in-process
`fake:` transport, so no RabbitMQ is needed. Compute, network, amphora, volume and image
drivers are Octavia's noop drivers (set in the config file), the database is MariaDB.

Usage: python octavia_inproc.py --config-file octavia.conf
Env OCTAVIA_DEFAULT_PROJECT: under noauth, requests without X-Project-Id get this project and
the admin role (so clients that cannot send headers, like `openstack --os-auth-type none`, can
be pointed at Octavia exactly as at klb; used to check the compat tests against Octavia).
"""

import os

import socketserver
import sys
from wsgiref import simple_server

import oslo_messaging as messaging
from oslo_config import cfg
from oslo_log import log as logging

from octavia.api import app as api_app
from octavia.common import constants
from octavia.common import rpc
from octavia.controller.queue.v2 import endpoints

LOG = logging.getLogger(__name__)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    # Many benchmark clients connect at once.
    request_queue_size = 1024


class QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


def with_default_project(app, project):
    def wrapped(environ, start_response):
        if not environ.get("HTTP_X_PROJECT_ID"):
            environ["HTTP_X_PROJECT_ID"] = project
            environ.setdefault("HTTP_X_ROLES", "admin")
        return app(environ, start_response)

    return wrapped


def main():
    application = api_app.setup_app(argv=sys.argv)  # parses the config, sets up RPC
    default_project = os.environ.get("OCTAVIA_DEFAULT_PROJECT")
    if default_project:
        application = with_default_project(application, default_project)
    if rpc.TRANSPORT is None:
        rpc.init()
    target = messaging.Target(
        topic=constants.TOPIC_AMPHORA_V2, server=cfg.CONF.host, fanout=False
    )
    worker = rpc.get_server(target, [endpoints.Endpoints()])
    worker.start()
    host, port = cfg.CONF.api_settings.bind_host, cfg.CONF.api_settings.bind_port
    srv = simple_server.make_server(
        host, port, application, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
    LOG.info("Octavia API + in-process worker on %s:%s", host, port)
    print(f"octavia listening on http://{host}:{port}", flush=True)
    try:
        srv.serve_forever()
    finally:
        worker.stop()


if __name__ == "__main__":
    main()
