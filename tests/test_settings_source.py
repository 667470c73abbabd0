"""One list of settings: the setup form, the settings validate_configuration reads, configuration.json.example and
README's settings table name the same keys."""

import json
import re
from pathlib import Path

import connector

REPO = Path(__file__).resolve().parents[1]
README_SETTING_ROW = re.compile(r"^\| `([a-z_0-9]+)` \|")


def form_keys() -> list[str]:
    return [field.name for field in connector.configuration_form()._fields]


def readme_settings_table() -> list[str]:
    """The keys of README's settings table: the table (a run of `|` lines) that has a row for ravendb_urls."""
    tables, table = [], []
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            table.append(line)
        elif table:
            tables.append(table)
            table = []
    tables.append(table)
    for rows in tables:
        keys = [match.group(1) for row in rows if (match := README_SETTING_ROW.match(row))]
        if "ravendb_urls" in keys:
            return keys
    return []


class RecordingConfiguration(dict):
    """A configuration that records which keys the connector reads."""

    def __init__(self, values: dict):
        super().__init__(values)
        self.read: list[str] = []

    def get(self, key, default=None):
        self.read.append(key)
        return super().get(key, default)


def test_the_example_configuration_has_every_form_setting_in_the_form_order():
    example = json.loads((REPO / "configuration.json.example").read_text(encoding="utf-8"))

    assert list(example) == form_keys()
    assert example == {setting.key: setting.example for setting in connector._SETTINGS}  # the table's examples


def test_validation_reads_every_form_setting_and_no_other():
    configuration = RecordingConfiguration({"ravendb_urls": "http://localhost:8080", "database_name": "Northwind"})

    connector.validate_configuration(configuration)

    assert sorted(set(configuration.read)) == sorted(form_keys())


def test_readme_settings_table_lists_every_form_setting():
    keys = readme_settings_table()

    assert len(keys) == len(set(keys)), "a setting is listed twice"
    assert sorted(keys) == sorted(form_keys())
