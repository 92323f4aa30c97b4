"""The HTTPS job API: ``create_app(deps)`` (Flask), served by ``functions/api`` and ``sluice serve``."""
