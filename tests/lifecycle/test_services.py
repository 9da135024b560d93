"""Service metadata: the three spellings of options, validation naming service.param, fields."""

from __future__ import annotations

import pytest

from apiserver.errors import InvalidArgument
from apiserver.lifecycle import services
from apiserver.lifecycle.services import param, parse_options, validate


def _named(values: dict) -> dict:
    return {spec.qualified: value for spec, value in values.items()}


def test_dot_comma_and_nested_maps_name_the_same_parameters():
    """'siteinfo.domain', ApisCP's 'siteinfo,domain' and {siteinfo: {domain}} are one parameter."""
    values, flags = parse_options({"siteinfo.email": "a@b.example", "billing,parent_invoice": "INV-1",
                                   "diskquota": {"quota": "10", "units": "gb"}, " ssh.enabled ": True})
    assert flags == {}
    assert _named(values) == {"siteinfo.email": "a@b.example", "billing.parent_invoice": "INV-1",
                              "diskquota.quota": "10", "diskquota.units": "gb", "ssh.enabled": True}
    with pytest.raises(InvalidArgument, match="siteinfo.email: given twice"):
        parse_options({"siteinfo.email": "a@b.example", "siteinfo,email": "c@d.example"})


def test_unknown_names_and_bad_values_are_refused_naming_service_param():
    """An unknown service or parameter and a bad value are Client.InvalidArgument naming service.param."""
    for opts, message in (({"nosuch.thing": 1}, "nosuch.thing: unknown service"),
                          ({"siteinfo.colour": 1}, "siteinfo.colour: unknown parameter of siteinfo"),
                          ({"siteinfo": "x"}, "names a service"),
                          ({"siteinfo.a.b": 1}, "expected service.param")):
        with pytest.raises(InvalidArgument, match=message):
            parse_options(opts)
    for name, value, message in (("diskquota.quota", "lots", "diskquota.quota: expected a number"),
                                 ("diskquota.quota", -1, "diskquota.quota: must be at least 0"),
                                 ("users.max", 5000, "users.max: must be at most 4096"),
                                 ("users.max", 2.5, "users.max: expected a whole number"),
                                 ("diskquota.units", "PB", "diskquota.units: expected one of"),
                                 ("siteinfo.email", ["a@b.example"], "siteinfo.email: give one address"),
                                 ("siteinfo.email", "Array", "siteinfo.email: invalid email address 'Array'"),
                                 ("mysql.dbaseprefix", "nounderscore", "mysql.dbaseprefix: invalid prefix"),
                                 ("ssh.enabled", "maybe", "ssh.enabled: expected 1 or 0"),
                                 ("ssh.enabled", None, "ssh.enabled: a value is required"),
                                 ("siteinfo.enabled", 0, "siteinfo.enabled: must be 1"),
                                 ("auth.cpasswd", "plain", "auth.cpasswd: expected a \\$6\\$"),
                                 ("siteinfo.notes", "a\x00b", "siteinfo.notes: control characters")):
        with pytest.raises(InvalidArgument, match=message):
            validate(param(*name.split(".")), value)


def test_a_database_password_with_a_control_character_is_refused():
    """mysql/pgsql.passwd with a line break (an option of its own in .my.cnf) is refused naming it; printable kept."""
    for service in ("mysql", "pgsql"):
        for bad in ('x"\nhost=192.0.2.1', "a\rb", "tab\there", "del\x7f"):
            with pytest.raises(InvalidArgument, match=f"{service}.passwd: control characters"):
                validate(param(service, "passwd"), bad)
        assert validate(param(service, "passwd"), 'q"b\\c:d#e;f g') == 'q"b\\c:d#e;f g'


def test_values_are_converted_as_apiscp_reads_them():
    """Switches take true/1/'1'/'true' (the one boolean reader) and become 0/1; null words are null."""
    enabled = param("ssh", "enabled")
    assert [validate(enabled, v) for v in (True, 1, "1", "true", "yes", False, 0, "0", "false")] == \
        [1, 1, 1, 1, 1, 0, 0, 0, 0]
    quota = param("diskquota", "quota")
    assert [validate(quota, v) for v in ("None", "null", "", None, "2.5", 3.0, "4")] == [None] * 4 + [2.5, 3, 4]
    assert validate(param("diskquota", "units"), "g") == "GB"
    assert validate(param("siteinfo", "admin_user"), "Owner") == "owner"
    assert validate(param("siteinfo", "domain"), "Example.COM.") == "example.com"
    assert validate(param("rampart", "whitelist"), "192.0.2.1, 2001:db8::/48") == ["192.0.2.1/32", "2001:db8::/48"]
    crypted = "$6$saltsalt$" + "a" * 86
    assert validate(param("auth", "cpasswd"), crypted) == crypted
    assert services.is_default("DEFAULT") and not services.is_default("default-plan")


def test_blesta_flags_nested_under_an_integer_key_are_flags():
    """{siteinfo.plan: P, 0: {reset: true}} (Blesta's two-argument edit) gives the flags; other maps
    under integer keys are refused."""
    values, flags = parse_options({"siteinfo.plan": "basic", "0": {"reset": True}}, flag_names=("reset", "dry_run"))
    assert _named(values) == {"siteinfo.plan": "basic"} and flags == {"reset": True}
    with pytest.raises(InvalidArgument, match="no flag"):
        parse_options({"0": {"explode": True}}, flag_names=("reset",))
    with pytest.raises(InvalidArgument, match="unknown service"):
        parse_options({"0": {"reset": True}})  # no flags are taken where none are known


def test_collect_field_lists():
    """Default fields, bare services, '*' and service.param; secrets are never read back."""
    assert services.field_list(None) == services.field_list([]) == list(services.DEFAULT_FIELDS)
    assert services.field_list(["ssh", "diskquota.quota", "ssh.enabled"]) == [("ssh", "enabled"),
                                                                               ("diskquota", "quota")]
    assert ("auth", "tpasswd") not in services.field_list(["*"]) and ("auth", "tpasswd") not in \
        services.field_list(["auth"])
    with pytest.raises(InvalidArgument, match="auth.tpasswd: a secret is never read back"):
        services.field_list(["auth.tpasswd"])
