"""epic reader: not written yet (`load_benchmark` names the readers it has)."""
