"""File and value formats: boxes (the package's convention, box math, box text; :mod:`.boxes`) and AVA's CSVs
(:mod:`.ava`)."""
