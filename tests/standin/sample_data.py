"""Realistic sample documents: the `demo` database and the benchmark's server-side order generator."""

from __future__ import annotations

import random
from typing import Any

from tests.standin.storage import Database

CITIES = [
    ("Reims", "51100", "France", 49.2583, 4.0317),
    ("Münster", "44087", "Germany", 51.9607, 7.6261),
    ("Rio de Janeiro", "05454-876", "Brazil", -22.9068, -43.1729),
    ("Lyon", "69004", "France", 45.764, 4.8357),
    ("Charleroi", "01234", "Belgium", 50.4108, 4.4446),
    ("Bern", "03012", "Switzerland", 46.948, 7.4474),
    ("Portland", "97219", "USA", 45.5152, -122.6784),
    ("Oulu", "90110", "Finland", 65.0121, 25.4651),
    ("London", "WX1 6LT", "UK", 51.5072, -0.1276),
    ("Torino", "10100", "Italy", 45.0703, 7.6869),
]
PRODUCTS = ["Chai", "Chang", "Aniseed Syrup", "Tofu", "Pavlova", "Konbu", "Ikura", "Gnocchi", "Tourtière", "Pâté"]
FIRST = ["Nancy", "Andrew", "Janet", "Margaret", "Steven", "Michael", "Robert", "Laura", "Anne"]
LAST = ["Davolio", "Fuller", "Leverling", "Peacock", "Buchanan", "Suyama", "King", "Callahan", "Dodsworth"]


def raven_date(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> str:
    """A date as RavenDB clients store DateTime values: 7 fractional digits, no zone."""
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00.0000000"


def _address(rng: random.Random, precise: bool = True) -> dict[str, Any]:
    city, postal, country, lat, lon = rng.choice(CITIES)
    jitter = rng.random() / 1000
    return {
        "Line1": f"{rng.randint(1, 250)} {rng.choice(['Rue de l’Abbaye', 'Hauptstr.', 'Avenida Brasil', 'Main St.'])}",
        "Line2": None,
        "City": city,
        "Region": None if country != "USA" else "OR",
        "PostalCode": postal,
        "Country": country,
        "Location": {"Latitude": lat + jitter if precise else lat, "Longitude": lon - jitter if precise else lon},
    }


def order(n: int, rng: random.Random, companies: int = 91, employees: int = 9, products: int = 77) -> dict[str, Any]:
    """One order in the Northwind shape (nested ShippingAddress, Lines array, dates, money, nulls)."""
    year, month, day = 1996 + n % 3, 1 + n % 12, 1 + n % 28
    lines = []
    for _ in range(1 + n % 4):
        p = rng.randint(1, products)
        lines.append(
            {
                "Discount": rng.choice([0, 0.05, 0.1, 0.15]),
                "PricePerUnit": round(rng.uniform(2, 120), 2),
                "Product": f"products/{p}-A",
                "ProductName": PRODUCTS[p % len(PRODUCTS)],
                "Quantity": rng.randint(1, 60),
            }
        )
    shipped = None if n % 7 == 0 else raven_date(year, month, min(day + 3, 28))
    return {
        "Company": f"companies/{1 + n % companies}-A",
        "Employee": f"employees/{1 + n % employees}-A",
        "Freight": round(rng.uniform(0.02, 1007.64), 2),
        "Lines": lines,
        "OrderedAt": raven_date(year, month, day),
        "RequireAt": raven_date(year, month, min(day + 14, 28)),
        "ShipTo": _address(rng),
        "ShipVia": f"shippers/{1 + n % 3}-A",
        "ShippedAt": shipped,
    }


def generate_orders(db: Database, count: int, collection: str = "Orders", start: int = 1) -> int:
    """Store `count` orders ids <collection>/<n>-A server-side (on `db`'s node), far faster than a client could."""
    rng = random.Random(start)
    prefix = collection.lower()
    metadata = {"@collection": collection}
    with db.lock:
        for n in range(start, start + count):
            doc_id = f"{prefix}/{n}-A"
            existing = db.docs.get(doc_id)
            if existing is not None and existing.collection != collection:
                continue
            db.store_raw(doc_id, order(n, rng), metadata, collection)
    return count


def _company(n: int, rng: random.Random) -> dict[str, Any]:
    return {
        "ExternalId": f"C{n:04d}",
        "Name": f"{rng.choice(['Alfreds', 'Bon app', 'Ernst', 'Folk och fä', 'Wolski'])} {n}",
        "Contact": {"Name": f"{rng.choice(FIRST)} {rng.choice(LAST)}", "Title": "Sales Representative"},
        "Address": _address(rng),
        "Phone": f"0{rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}",
        "Fax": None if n % 3 else f"(5) 555-{rng.randint(1000, 9999)}",
    }


def _employee(n: int, rng: random.Random) -> dict[str, Any]:
    return {
        "FirstName": FIRST[(n - 1) % len(FIRST)],
        "LastName": LAST[(n - 1) % len(LAST)],
        "Title": "Sales Representative" if n > 2 else "Vice President, Sales",
        "Address": _address(rng),
        "HiredAt": raven_date(1992 + n % 3, 1 + n % 12, 1 + n % 28),
        "Birthday": raven_date(1948 + n, 1 + n % 12, 1 + n % 28),
        "HomePhone": f"(206) 555-{rng.randint(1000, 9999)}",
        "Extension": str(rng.randint(100, 9999)),
        "ReportsTo": None if n == 2 else "employees/2-A",
        "Notes": [f"Education includes a degree in {rng.choice(['psychology', 'English', 'French'])}."],
        "Territories": [f"{rng.randint(1000, 99999):05d}" for _ in range(1 + n % 3)],
    }


def _product(n: int, rng: random.Random) -> dict[str, Any]:
    return {
        "Name": f"{PRODUCTS[n % len(PRODUCTS)]} {n}",
        "Supplier": f"suppliers/{1 + n % 29}-A",
        "Category": f"categories/{1 + n % 8}-A",
        "QuantityPerUnit": f"{rng.randint(1, 48)} - {rng.choice(['12 oz bottles', '500 g', '1 kg pkg.'])}",
        "PricePerUnit": round(rng.uniform(2.5, 263.5), 2),
        "UnitsInStock": rng.randint(0, 125),
        "UnitsOnOrder": rng.choice([0, 0, 10, 40]),
        "Discontinued": n % 9 == 0,
        "ReorderLevel": rng.choice([0, 5, 10, 25]),
    }


def load_demo(db: Database) -> None:
    """The `demo` sample: Companies, Employees, Products, Orders and a HiLo document."""
    rng = random.Random(1996)
    sets = [("Companies", 91, _company), ("Employees", 9, _employee), ("Products", 77, _product)]
    with db.lock:
        for collection, count, make in sets:
            for n in range(1, count + 1):
                db.store_raw(f"{collection.lower()}/{n}-A", make(n, rng), {"@collection": collection}, collection)
        for n in range(1, 301):
            db.store_raw(f"orders/{n}-A", order(n, rng), {"@collection": "Orders"}, "Orders")
        db.store_raw("Raven/Hilo/orders", {"Max": 320}, {"@collection": "@hilo"}, "@hilo")
