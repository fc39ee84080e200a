"""The live page's static files (``GET /``), served as they are by :mod:`pycluster.http`:
no build step, nothing fetched from elsewhere."""
