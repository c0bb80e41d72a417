# Sourced by run.sh and callgrind.sh: what a browser sends for a page of a protected app,
# and what nginx's auth sub-request (nginx-examples/, auth_request) makes of it.
#
# browser_headers <host[:port]> <session cookie> -> BROWSER_H, wrk/curl -H arguments:
# Chrome 131's headers for a same-origin navigation (client hints, fetch metadata, a long
# Accept, compression and languages, a Referer), in Chrome's order, and a Cookie header in
# which the outpost's session sits among other applications' cookies (analytics, another
# app's CSRF token and session, Grafana's): ≈ 1 KB besides the session cookie.
browser_headers() {
  local host="$1" session="$2"
  BROWSER_H=(
    -H "Host: $host"
    -H 'sec-ch-ua: "Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"'
    -H 'sec-ch-ua-mobile: ?0'
    -H 'sec-ch-ua-platform: "Linux"'
    -H 'Upgrade-Insecure-Requests: 1'
    -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'
    -H 'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7'
    -H 'Sec-Fetch-Site: same-origin'
    -H 'Sec-Fetch-Mode: navigate'
    -H 'Sec-Fetch-User: ?1'
    -H 'Sec-Fetch-Dest: document'
    -H "Referer: http://$host/dashboard/"
    -H 'Accept-Encoding: gzip, deflate, br, zstd'
    -H 'Accept-Language: en-US,en;q=0.9,de;q=0.8'
    -H "Cookie: _ga=GA1.1.1843572218.1733400000; _ga_5Q8L2H1XJ4=GS1.1.1733400000.3.1.1733401234.0.0.0; csrftoken=tH3kF8vQ2mZpL9xR4wN7yB1cD6eG0jA5; sessionid=k2v9x7q4m1p8s3t6w0z5y2b7n4c1f8h3; $session; grafana_session=9f3c2a7e4b1d8f6a0c5e3b9d7f2a4c6e; grafana_session_expiry=1733404834; theme=dark"
  )
}

# subrequest_headers <host without port> <original url> <session cookie> -> SUBREQ_H: the
# auth sub-request nginx sends to the outpost for that browser request (captured from nginx
# 1.22 with nginx/app.example.com.conf): the location's proxy_set_header lines first (Host
# without the port, X-Original-URL, X-Forwarded-For, X-Forwarded-Proto), then the browser's
# headers minus Host and Connection.
subrequest_headers() {
  local host="$1" original="$2" session="$3" i
  local port_host="${original#*://}"; port_host="${port_host%%/*}"
  browser_headers "$port_host" "$session"
  SUBREQ_H=(-H "Host: $host" -H "X-Original-URL: $original" -H "X-Forwarded-For: 127.0.0.1" -H "X-Forwarded-Proto: http")
  for ((i = 2; i < ${#BROWSER_H[@]}; i++)); do SUBREQ_H+=("${BROWSER_H[$i]}"); done
}
