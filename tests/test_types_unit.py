"""How values are shaped and which columns are declared, so each lands with the type it has in RavenDB."""

import pytest

from connector import declare_columns, flatten

VALUES = [
    ("money", 1234567.89, "1234567.89"),
    ("coordinate-17-digits", 49.255958199999988, "49.25595819999999"),
    ("freight", 32.38, "32.38"),
    ("integral-double", 5.0, "5.0"),
    ("huge-double", 1e300, "1.0e+300"),
    ("tiny-double", -2.5e-10, "-2.5e-10"),
    ("long", 2**62, 2**62),
    ("beyond-64-bits", 2**70, "1180591620717411303424"),
    ("true", True, "true"),
    ("false", False, "false"),
    ("postal-code", "51100", "51100"),
    ("postal-code-leading-zero", "01234", "01234"),
    ("raven-date", "1996-07-04T00:00:00.0000000", "1996-07-04T00:00:00.0000000"),
    ("null", None, None),
    ("array", [1, "a", None], [1, "a", None]),
]


@pytest.mark.parametrize(("value", "cell"), [v[1:] for v in VALUES], ids=[v[0] for v in VALUES])
def test_each_json_value_becomes_a_lossless_cell(make_document, value, cell):
    assert flatten(make_document(Field=value))["Field"] == cell


def test_the_exact_float_text_reads_back_as_the_same_double(make_document):
    value = 49.255958199999988

    assert float(flatten(make_document(Field=value))["Field"]) == value


def test_objects_deeper_than_ten_levels_land_as_one_json_value(make_document):
    deep: dict = {"leaf": 1}
    for _ in range(49):
        deep = {"n": deep}

    row = flatten(make_document(Deep=deep))

    deepest_column = "Deep" + "_n" * 9
    assert isinstance(row[deepest_column], dict)


DECLARATIONS = [
    ("text", ["Reims", "Paris"], "STRING"),
    ("postal-codes", ["51100", "01234"], "STRING"),
    ("phone-numbers", ["(+1) 555-0100", "26.47.15.10"], "STRING"),
    ("text-true", ["true", "false"], "STRING"),
    ("number-then-text", [51100, "51100-A"], "STRING"),
    ("big-integer", [2**70, 1], "STRING"),
    ("array-and-text", [[1], "x"], "JSON"),
    ("integers", [1, 2], None),
    ("numbers", [1, 2.5], None),
    ("booleans", [True, None], None),
    ("raven-dates", ["1996-07-04T00:00:00.0000000", "2024-05-01T10:11:12.1234567Z"], None),
    ("arrays", [[1], []], None),
    ("only-null", [None], None),
]


@pytest.mark.parametrize(("values", "declared"), [d[1:] for d in DECLARATIONS], ids=[d[0] for d in DECLARATIONS])
def test_declared_column_type_follows_the_json_types_seen(make_document, values, declared):
    columns = declare_columns([make_document(Field=value) for value in values])

    assert columns.get("Field") == declared


def test_id_and_last_modified_are_always_declared(make_document):
    assert declare_columns([]) == {"Id": "STRING", "LastModified": "UTC_DATETIME"}
