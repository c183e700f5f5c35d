"""Serving: everything between an HTTP request and a model's predictions.

`sagecraft.server` builds the aiohttp application from these modules; `lifecycle` starts it (one
process, or forked workers) for `sagecraft serve`.
"""
