"""The public API as a typed contract: one module per API area, holding the request bodies the router parses
(multipart bodies as ``FormModel``s, JSON bodies as models) and the responses it answers, typed with the ``openai``
package's own types where they fit (an engine extension subclasses them). The route modules of ``services.router.api``
read requests into these models and answer them; ``/openapi.json`` is generated from them."""
