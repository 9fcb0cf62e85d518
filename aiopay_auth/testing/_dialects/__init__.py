"""The provider dialects a :class:`~aiopay_auth.testing.FakeProvider` speaks."""
