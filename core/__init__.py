"""maskahand.core: the bottom layer (configs, atomic files, storage, exit statuses); no torch.

Import its modules directly (``from maskahand.core.config import MineRecipe``); the package itself
exports nothing.
"""
