"""The hotline's Grafana dashboards as tables of rows and panels (one module a dashboard),
and the code that turns those tables into grafana-foundation-sdk objects (`build`).

Not an installed package: `deploy/grafana/generate.py` puts this folder's parent on
`sys.path` and imports it from there.
"""
