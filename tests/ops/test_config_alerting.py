import pytest

from schemas.settings.config import ConfigError, parse_config


def alerting(**overrides) -> dict:
    base = {
        "contacts": [{"id": "duty", "phone": "+821012345678"}, {"id": "chief", "phone": "+821098765432"}],
        "channels": [{"kind": "sms", "id": "sms"}, {"kind": "webhook", "id": "ops", "url": "http://127.0.0.1:1/x"},
                     {"kind": "sound", "id": "alarm", "file": "alarm.wav"}],
        "routes": [{"id": "crowd", "match": {"severities": ["critical"], "hours": "22:00-06:00"},
                    "channels": ["sms", "ops"], "broadcast": ["alarm"], "escalation": ["duty", "chief"]}],
    }
    base.update(overrides)
    return {"alerting": base}


def test_a_complete_alerting_section_is_accepted(tmp_path):
    config = parse_config(alerting(), tmp_path)
    assert config.alerting.routes[0].escalation == ["duty", "chief"]
    assert config.alerting.channel("sms").kind == "sms"


@pytest.mark.parametrize("overrides, field_text", [
    ({"routes": [{"id": "r", "channels": ["pager"], "escalation": ["duty"]}]}, "unknown channel(s) pager"),
    ({"routes": [{"id": "r", "channels": ["sms"], "escalation": ["nobody"]}]}, "unknown contact(s) nobody"),
    ({"routes": [{"id": "r", "broadcast": ["sms"]}]}, "sms channel needs a contact"),
    ({"routes": [{"id": "r", "channels": ["sms"]}]}, "needs broadcast channels"),
    ({"routes": [{"id": "r", "match": {"hours": "25:00-06:00"}, "broadcast": ["alarm"]}]}, "hours"),
    ({"contacts": [{"id": "duty", "phone": "010-1234-5678"}]}, "alerting.contacts.0.phone"),
    ({"channels": [{"kind": "sms", "id": "sms", "account_sid_env": "my sid"}]}, "account_sid_env"),
    ({"channels": [{"kind": "sms", "id": "sms", "template": "{nonsense}"}]}, "template placeholders"),
    ({"channels": [{"kind": "sms", "id": "sms", "template": "{title.upper} {ref}"}]}, "{title.upper}"),
    ({"channels": [{"kind": "sms", "id": "sms", "template": "{title[0]} {ref}"}]}, "{title[0]}"),
    ({"channels": [{"kind": "sms", "id": "sms", "template": "{title:>{width}}"}]}, "template placeholders"),
    ({"channels": [{"kind": "webhook", "id": "ops", "url": "https://"}]}, "alerting.channels.0.webhook.url"),
    ({"channels": [{"kind": "webhook", "id": "ops"}]}, "exactly one of url and url_env"),
    ({"channels": [{"kind": "webhook", "id": "ops", "url": "https://h/x", "url_env": "HOOK"}]}, "exactly one"),
    ({"channels": [{"kind": "pager", "id": "p"}]}, "alerting.channels.0"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"contacts": [{"id": "duty"}, {"id": "duty"}], "routes": []}, "duplicate contact id"),
])
def test_bad_alerting_configuration_fails_naming_the_problem(tmp_path, overrides, field_text):
    with pytest.raises(ConfigError) as error:
        parse_config(alerting(**overrides), tmp_path)
    assert field_text in str(error.value)


def test_phoneless_contact_needs_another_channel(tmp_path):
    contacts = [{"id": "duty"}]
    with pytest.raises(ConfigError, match="have no phone"):
        parse_config(alerting(contacts=contacts, routes=[{"id": "r", "channels": ["sms"], "escalation": ["duty"]}]),
                     tmp_path)
    parse_config(alerting(contacts=contacts, routes=[{"id": "r", "channels": ["sms", "ops"], "escalation": ["duty"]}]),
                 tmp_path)
