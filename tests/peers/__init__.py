"""Local stand-ins for the services winback talks to (Twilio, Slack, webhook receivers, Meta), on 127.0.0.1."""
