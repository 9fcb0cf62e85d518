"""``aiopay-auth demo``: a payment-worker fan against loopback fake providers.

The demo starts a :class:`~aiopay_auth.testing.FakeProvider` for each
dialect (CM.com, Vonage, Pay-me, Oro; Oro with a back-office and a
storefront provider, so five providers on four servers) with tokens that
live a few seconds, adds the five providers to one
:class:`~aiopay_auth.TokenManager`, and runs *concurrency* workers that
send payment requests round-robin through one pooled session for
*duration* seconds. It then reports, per provider, what the client did and
what the servers saw.

By default the fake servers run in a child process
(:class:`~aiopay_auth.testing.FakeProviderProcess`), so that on a
multi-core machine the client and the servers do not share one core; the
child sends back where they listen, the demo plans its lanes from that,
and asks for their counters when the run ends.

With ``--fleet N`` it starts a throwaway ``redis-server``
(:class:`~aiopay_auth.testing.RedisServer`) and N worker processes instead,
each with its own manager wrapped by :class:`~aiopay_auth.fleet.RedisFleet`
and its share of the workers and the pool. The report then sets the token
requests the fleet sent beside what per-process fetching would have cost.

With ``--merchants N`` it serves one CM.com API for N merchants through a
tenant set instead (:func:`~._merchants.run_merchants_demo`): the fake
provider accepts each merchant's credentials, each request names its
merchant, and the report checks at the server that every request carried
its own merchant's token.

One concern per module; this package imports none of them, so that the
CLI's parser can read :mod:`._config` without loading the rest:

* :mod:`._config`: the options (:class:`~._config.DemoConfig`), the exit status after Ctrl-C.
* :mod:`._results`: per-provider rows, the summary, the fleet's rows, how they add up.
* :mod:`._report`: the table, the JSON form, the progress line (pure functions).
* :mod:`._lanes`: what the workers send to each provider, planned from endpoints.
* :mod:`._servers`: the fake servers, in a child process or inline.
* :mod:`._progress`: the progress line's task and the Ctrl-C handler.
* :mod:`._run`: the workers and the single-process run (:func:`~._run.run_demo`).
* :mod:`._fleet_worker`: one fleet worker process.
* :mod:`._fleet`: the fleet run's parent (:func:`~._fleet.run_fleet_demo`).
* :mod:`._merchants`: the merchants' run (:func:`~._merchants.run_merchants_demo`).
"""
