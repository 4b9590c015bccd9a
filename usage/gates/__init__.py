"""The mediation gates, in order: parse → classify → dedup → identify → bucket → rate → tax.

`parse` reads the file (per line, streaming); every later gate is a set-based SQL step defined in
its own module and composed by `usage.pipeline`.
"""
