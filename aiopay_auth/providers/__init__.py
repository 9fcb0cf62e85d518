"""Ready-made provider profiles.

Each module has a ``provider(...)`` function that returns a
:class:`~aiopay_auth.Provider` speaking that provider's dialect:

* :mod:`~aiopay_auth.providers.cm`: CM.com Online Payments;
* :mod:`~aiopay_auth.providers.vonage`: Vonage Contact Center Payment API;
* :mod:`~aiopay_auth.providers.payme`: Pay-me / Alignet;
* :mod:`~aiopay_auth.providers.oro`: OroCommerce back-office and storefront;
* :mod:`~aiopay_auth.providers.generic`: any RFC 6749 token endpoint.

Every URL can be overridden (``token_url=``, ``api=``) to point a profile
at a sandbox or at :mod:`aiopay_auth.testing`'s fake server.
"""

from . import cm, generic, oro, payme, vonage


__all__ = ["cm", "generic", "oro", "payme", "vonage"]
