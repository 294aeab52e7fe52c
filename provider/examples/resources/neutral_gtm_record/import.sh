#!/bin/sh
# Import by <zone>/<domain>/<type>; add /<dns> (embedded | powerdns) when the
# record exists in both backends. Only records carrying neutral's ownership
# comment (account "neutral") can be imported; their policy arguments come
# back from that comment.
terraform import neutral_gtm_record.app example.com/app.example.com/A
terraform import neutral_gtm_record.api example.org/api.example.org/A/powerdns
