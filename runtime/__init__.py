"""maskahand.runtime: the torch layer under every stage (distributed, precision, atomic writes, weights).

Import its modules directly (``from maskahand.runtime.distributed import is_main``); the package itself
exports nothing.
"""
