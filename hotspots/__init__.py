"""Interaction Hotspots (Nagarajan et al., ICCV 2019): the weakly supervised model, trained and scored by our tools."""
