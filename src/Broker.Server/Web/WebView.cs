using System.Text;
using System.Text.Json.Nodes;
using Broker.Server.Core;
using Broker.Server.Hosting;
using Broker.Server.Security;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Server.Web;

/// <summary>
/// The web view on the HTTP/1.1 listener: a few static files at <c>/ui</c> (no build step, no CDN; embedded in the
/// server) over a small JSON API: <c>GET /api/topics</c> (every topic with its groups' numbers), <c>GET
/// /api/topics/{name}/messages</c> (read without consuming: dead letters with their headers), and <c>POST
/// /api/topics/{name}/redrive</c> (dead letters back to their topics). The POST requires the header
/// <c>X-Broker-Request</c>: a page of another origin cannot send it without a CORS preflight, which the broker never
/// grants, so no other web page can make a browser redrive. With API keys required, the view asks for one (HTTP Basic,
/// the key as the password; <see cref="HttpAccess"/>) and shows only the topics the key has a grant on.
/// </summary>
internal static class WebView
{
    private const string RequestHeader = "X-Broker-Request";
    private const int MaxPeek = 200;
    private const int PreviewBytes = 4096;

    private static readonly Dictionary<string, string> ContentTypes = new(StringComparer.Ordinal)
    {
        [".html"] = "text/html; charset=utf-8",
        [".js"] = "text/javascript; charset=utf-8",
        [".css"] = "text/css; charset=utf-8",
    };

    public static void MapWebView(this WebApplication app)
    {
        app.MapGet("/ui/{file?}", (string? file) => StaticFile(file ?? "index.html"));
        app.MapGet("/api/topics", TopicsAsync);
        app.MapGet("/api/topics/{name}/messages", MessagesAsync);
        app.MapPost("/api/topics/{name}/redrive", RedriveAsync);
    }

    private static IResult StaticFile(string file)
    {
        string extension = Path.GetExtension(file);
        var stream = typeof(WebView).Assembly.GetManifestResourceStream("web/" + file);
        if (stream is null || !ContentTypes.TryGetValue(extension, out string? contentType))
        {
            stream?.Dispose();
            return Results.NotFound();
        }
        return Results.Stream(stream, contentType);
    }

    private static async Task<IResult> TopicsAsync(TopicStore store, HttpContext context, CancellationToken cancellationToken)
    {
        var caller = HttpAccess.CallerOf(context);
        var topics = new JsonArray();
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        // Only topics open now are described: opening one recovers it from disk, which a page refreshed every two
        // seconds must not do to every topic on disk. The others are listed by name (they open on first use).
        var open = store.OpenTopics().ToDictionary(topic => topic.Name, StringComparer.Ordinal);
        foreach (string name in store.ListTopics().Where(caller.Sees))
        {
            if (!open.TryGetValue(name, out var topic))
            {
                topics.Add(new JsonObject { ["name"] = name, ["open"] = false, ["deadLetter"] = name.EndsWith(EntityName.DeadLetterSuffix, StringComparison.Ordinal), ["groups"] = new JsonArray() });
                continue;
            }
            TopicInfo info;
            try
            {
                info = await topic.DescribeAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (BrokerException)
            {
                continue;  // deleted or failed meanwhile
            }
            var groups = new JsonArray();
            foreach (var group in info.Groups)
            {
                groups.Add(new JsonObject
                {
                    ["name"] = group.Name,
                    ["backlog"] = group.Backlog,
                    ["inFlight"] = group.InFlight,
                    ["delayed"] = group.Delayed,
                    ["consumers"] = group.Consumers,
                    ["ackFloor"] = group.AckFloor,
                    ["acked"] = group.AcknowledgedTotal,
                    ["redelivered"] = group.RedeliveredTotal,
                    ["deadLettered"] = group.DeadLetteredTotal,
                    ["oldestUnackedAgeSeconds"] = group.OldestUnackedPublishUnixMs is { } published ? Math.Max(0, now - published) / 1000.0 : 0,
                    ["maxDeliveries"] = group.Policy.MaxDeliveries == GroupPolicy.UnlimitedDeliveries ? 0 : group.Policy.MaxDeliveries,
                    ["deadLetterTopic"] = group.Policy.MaxDeliveries == GroupPolicy.UnlimitedDeliveries ? null : group.Policy.DeadLetterTopicFor(name),
                });
            }
            topics.Add(new JsonObject
            {
                ["name"] = name,
                ["open"] = true,
                ["deadLetter"] = name.EndsWith(EntityName.DeadLetterSuffix, StringComparison.Ordinal),
                ["firstOffset"] = info.FirstOffset,
                ["nextOffset"] = info.NextOffset,
                ["stored"] = info.NextOffset - info.FirstOffset,
                ["diskBytes"] = info.LogBytes,
                ["groups"] = groups,
            });
        }
        return Results.Text(new JsonObject { ["version"] = BrokerHost.Version, ["unixMs"] = now, ["topics"] = topics }.ToJsonString(),
            "application/json");
    }

    private static async Task<IResult> MessagesAsync(string name, long? from, int? limit, TopicAdmin admin, HttpContext context, CancellationToken cancellationToken)
    {
        int count = Math.Clamp(limit ?? 50, 1, MaxPeek);
        try
        {
            var messages = new JsonArray();
            foreach (var message in await admin.PeekAsync(HttpAccess.CallerOf(context), name, Math.Max(from ?? 0, 0), count, cancellationToken)
                         .ConfigureAwait(false))
            {
                var headers = new JsonObject();
                foreach (var (key, value) in message.Headers)
                    headers[key] = value;
                var payload = message.Payload.Span;
                messages.Add(new JsonObject
                {
                    ["offset"] = message.Offset,
                    ["publishUnixMs"] = message.PublishTimeUnixMs,
                    ["key"] = message.Key.IsEmpty ? null : Encoding.UTF8.GetString(message.Key.Span),
                    ["headers"] = headers,
                    ["payloadBytes"] = payload.Length,
                    ["payloadPreview"] = Encoding.UTF8.GetString(payload[..Math.Min(payload.Length, PreviewBytes)]),
                });
            }
            return Results.Text(new JsonObject { ["topic"] = name, ["messages"] = messages }.ToJsonString(), "application/json");
        }
        catch (BrokerException error) when (error.Code == BrokerErrorCode.TopicNotFound)
        {
            return Results.NotFound(new { error = error.Message });
        }
        catch (BrokerException error) when (error.Code == BrokerErrorCode.PermissionDenied)
        {
            return Results.Json(new { error = error.Message }, statusCode: StatusCodes.Status403Forbidden);
        }
    }

    private static async Task<IResult> RedriveAsync(string name, int? limit, HttpRequest request, DeadLetters deadLetters, CancellationToken cancellationToken)
    {
        if (!request.Headers.ContainsKey(RequestHeader))
            return Results.BadRequest(new { error = $"the {RequestHeader} header is required" });
        if (!name.EndsWith(EntityName.DeadLetterSuffix, StringComparison.Ordinal))
            return Results.BadRequest(new { error = $"'{name}' is not a dead-letter topic" });
        try
        {
            var result = await deadLetters.RedriveAsync(HttpAccess.CallerOf(request.HttpContext), name, limit ?? 0, null, cancellationToken)
                .ConfigureAwait(false);
            return Results.Ok(new { moved = result.Moved, skipped = result.Skipped });
        }
        catch (BrokerException error) when (error.Code == BrokerErrorCode.TopicNotFound)
        {
            return Results.NotFound(new { error = error.Message });
        }
        catch (BrokerException error) when (error.Code == BrokerErrorCode.PermissionDenied)
        {
            return Results.Json(new { error = error.Message }, statusCode: StatusCodes.Status403Forbidden);
        }
    }
}
