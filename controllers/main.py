"""Entry point of the path controller (``python controllers/main.py --prometheus ...``).

A script, not a package: the container image and the local harness both start the same
``braid controller`` command through it.
"""

from braid.cli.controller import controller_app

if __name__ == "__main__":
    controller_app()
