"""Alert dispatch: events and Alertmanager notifications -> routing -> SMS, webhook and sound, with an incident store.

Pure decisions (routing, SMS text, backoff) live apart from the adapters (Twilio, HTTP, SQLAlchemy, Kafka), so the
policy is tested without any of them; see dispatcher.py for the delivery guarantees.
"""
