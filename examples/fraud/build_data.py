"""Build the fraud example's data: a SQLite user table and a feature store, deterministically.

users.sqlite    users(id INTEGER PRIMARY KEY, age, country, risk_tier 0..2, account_age_days)
features.sqlite features(entity TEXT PRIMARY KEY, vector BLOB): 64 float32 "behaviour" features
features.npz    the same vectors as a .npz (keys, vectors)

The behaviour vectors are images of scikit-learn's bundled digits (0..16 per pixel), so the example
digits classifiers can score them offline: in this example, digit classes stand for behaviour
clusters, some of which are "risky" (see plan.yaml). Run: python examples/fraud/build_data.py
[--out DIR] [--users N].
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

FIRST_USER_ID = 1000


def build(out: Path, users: int = 200) -> dict[str, Path]:
    from meshserve.orchestrator.logic.features import write_sqlite_features

    out.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(2024)
    ids = np.arange(FIRST_USER_ID, FIRST_USER_ID + users)
    rows = [
        (int(uid), int(rng.integers(18, 80)), ["NL", "DE", "FR", "US"][int(rng.integers(4))],
         int(rng.integers(0, 3)), int(rng.integers(1, 3000)))
        for uid in ids
    ]  # fmt: skip
    db = out / "users.sqlite"
    db.unlink(missing_ok=True)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, age INTEGER, country TEXT, "
        "risk_tier INTEGER, account_age_days INTEGER)"
    )
    conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    vectors = {str(uid): x[i].astype(np.float32) for i, uid in enumerate(ids)}
    features = out / "features.sqlite"
    features.unlink(missing_ok=True)
    write_sqlite_features(features, vectors)
    npz = out / "features.npz"
    np.savez(npz, keys=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))
    np.save(out / "behaviour_clusters.npy", y[:users])
    return {"users": db, "features": features, "npz": npz}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "data"))
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()
    for name, path in build(Path(args.out), args.users).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
