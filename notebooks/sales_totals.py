# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sales totals
#
# A notebook kept in Git as a plain Python file (jupytext's percent format): `batcat run
# notebooks/sales_totals.py` executes it and records an `.ipynb` with its HTML. It needs no
# network: it reads the CSV files beside it.

# %% tags=["parameters"]
input_dir = "data/sales"  # a folder of CSV files: region, product, units, price
min_units = 1  # rows with fewer units are left out

# %%
import csv
from pathlib import Path

import batcat_nb

revenue: dict[str, float] = {}
for path in sorted(Path(input_dir).glob("*.csv")):
    with path.open() as stream:
        for row in csv.DictReader(stream):
            if int(row["units"]) >= min_units:
                revenue[row["region"]] = revenue.get(row["region"], 0.0) + int(row["units"]) * float(row["price"])

# %%
batcat_nb.record("revenue", revenue)
batcat_nb.record("revenue_total", sum(revenue.values()))
revenue
