#!/bin/sh
# Import by <zone>/<domain>/<type>; add /<dns> (embedded | powerdns |
# route53 | cloudflare | alidns) when the record exists in more than one
# configured backend. Only records carrying this deployment's ownership
# marker (a comment with account "neutral", or the _neutral-<type> TXT
# registry record of the cloud backends) can be imported; their policy
# arguments come back from that marker.
terraform import neutral_gtm_record.app example.com/app.example.com/A
terraform import neutral_gtm_record.api example.org/api.example.org/A/powerdns
terraform import neutral_gtm_record.www example.net/www.example.net/A/route53
