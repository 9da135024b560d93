"""ApisCP's account lifecycle (the billing API): sites' services, plans, suspension, usage.

``services``     what each ``service.param`` is, the three spellings of options, validation
``plans``        plan files (``<name>.ini``, ``.skeleton.ini``) in ``[plans] dir``
``store``        sites' rows: :class:`~apiserver.lifecycle.store.SiteRecord`, site resolution
``service``      :class:`~apiserver.lifecycle.service.SiteLifecycle`: add, edit, suspend,
                 activate, delete
``reports``      :class:`~apiserver.lifecycle.reports.SiteReports`: collect, domains, usage
``appliers``     the seam to the host: one applier per service, called on every change
``usage``        the figures of use and limits, and the seam where measurements come in
``suspension``   which sites are suspended, for the gates
``timespec``     ``since`` phrases (``30 days ago``)
"""
