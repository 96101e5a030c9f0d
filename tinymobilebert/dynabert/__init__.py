"""DynaBERT (Hou et al., NeurIPS 2020): one model, run at the width and depth that fits."""
