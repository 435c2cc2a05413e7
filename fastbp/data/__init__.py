"""Small public datasets shipped with fastbp (see ``fastbp.datasets``)."""
