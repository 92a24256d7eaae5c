using System.Text.Json.Nodes;
using Broker.Server.Hosting;
using Broker.Server.Security;
using Broker.Storage.Errors;

namespace Broker.Server.Sqs;

/// <summary>
/// The SQS-compatible API on the HTTP/1.1 listener: POST to <c>/</c> or to a queue URL
/// (<c>/000000000000/&lt;queue&gt;</c>), in the query or the JSON protocol (<see cref="SqsWire"/>). Requests must be
/// SigV4-signed (<see cref="IsSigned"/>); with API keys required the signature is verified against the keys
/// (<see cref="SqsSignatures"/>) and the key's grants decide the action (<see cref="SqsAccess"/>), otherwise any
/// credentials pass. Queue URLs are built from the request's Host header, so clients get addresses they can reach.
/// </summary>
internal static partial class SqsEndpoint
{
    public const string AccountId = "000000000000";

    /// <param name="services">The broker's services.</param>
    /// <param name="time">The broker's clock: a signature's time is checked against it.</param>
    public static void AddSqs(this IServiceCollection services, TimeProvider time)
    {
        services.AddSingleton(provider => new SqsSignatures(provider.GetRequiredService<KeyRing>(), time, provider.GetRequiredService<ILogger<SqsSignatures>>()));
        services.AddSingleton<SqsQueues>();
        services.AddSingleton<ReceiptHandles>();
        services.AddSingleton<SqsActions>();
    }

    public static void MapSqs(this WebApplication app)
    {
        // The query protocol may also come as GET with its parameters in the URL (kombu's receives do).
        app.MapMethods("/", ["POST", "GET"], HandleAsync);
        app.MapMethods($"/{AccountId}/{{queue}}", ["POST", "GET"], HandleAsync);
    }

    private static async Task HandleAsync(HttpContext context, SqsActions actions, ShutdownDrain drain, SqsSignatures signatures, BrokerOptions options,
        ILogger<SqsActions> logger)
    {
        string requestId = Guid.NewGuid().ToString();
        // The listener takes bodies of any size (gRPC batches are bounded by MaxRequestBytes on their own); an SQS
        // request is at most ten messages, so a body past MaxSqsRequestBytes is refused as it arrives instead of being
        // read into memory (by the signature check and the parser), with or without credentials.
        if (context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodyLimit)
            bodyLimit.MaxRequestBodySize = options.MaxSqsRequestBytes;
        var protocol = context.Request.Headers.ContainsKey("X-Amz-Target") ? SqsProtocol.Json : SqsProtocol.Query;
        // A shutdown ends long polls at once (answered 503) instead of waiting up to 20 s for them.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, drain.Draining);
        try
        {
            if (drain.Draining.IsCancellationRequested)
                throw SqsException.ServiceUnavailable("the broker is shutting down");
            if (!IsSigned(context.Request))
                throw SqsException.MissingAuthentication();
            // Verified before the body is parsed: an unsigned request costs the broker no parsing, and the parser then
            // reads the bytes the signature covered.
            var caller = await signatures.VerifyAsync(context.Request, stop.Token).ConfigureAwait(false);
            // A revoked key's requests end at once (a long poll too), as its gRPC calls do: the SDK's retry then meets
            // the refusal.
            using var revocation = caller.Revoked.CanBeCanceled ? caller.Revoked.Register(context.Abort) : default;
            var (readProtocol, action, input) = await SqsWire.ReadAsync(context.Request, stop.Token).ConfigureAwait(false);
            protocol = readProtocol;
            string urlBase = $"{context.Request.Scheme}://{context.Request.Host}/{AccountId}/";
            // Sent to a queue URL without a QueueUrl parameter (kombu's receives): the path names the queue.
            if (input["QueueUrl"] is null && context.Request.RouteValues["queue"] is string pathQueue)
                input["QueueUrl"] = urlBase + pathQueue;
            SqsAccess.Authorize(caller, action, new SqsInput(input), logger);
            JsonObject output = await actions.RunAsync(action, new SqsInput(input), urlBase, caller, stop.Token).ConfigureAwait(false);
            await SqsWire.WriteAsync(context.Response, protocol, action, output, requestId).ConfigureAwait(false);
        }
        catch (SqsException error)
        {
            await SqsWire.WriteErrorAsync(context.Response, protocol, error, requestId).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away: nobody to answer.
        }
        catch (OperationCanceledException) when (drain.Draining.IsCancellationRequested)
        {
            await SqsWire.WriteErrorAsync(context.Response, protocol, SqsException.ServiceUnavailable("the broker is shutting down"), requestId).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            await SqsWire.WriteErrorAsync(context.Response, protocol, SqsException.From(error, "?"), requestId).ConfigureAwait(false);
        }
        catch (Exception error) when (error is InvalidDataException or BadHttpRequestException)
        {
            await SqsWire.WriteErrorAsync(context.Response, protocol, SqsException.InvalidParameter(error.Message), requestId).ConfigureAwait(false);
        }
        catch (Exception error)
        {
            Events.Unexpected(logger, requestId, error);
            await SqsWire.WriteErrorAsync(context.Response, protocol, SqsException.Internal("unexpected error; the broker logged it"), requestId).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Signed as the AWS SDKs sign (an Authorization header, or a presigned URL), and not sent by a browser for a page
    /// of another site. Without API keys the signature is not verified (any credentials pass), but requiring one keeps
    /// any web page a broker user visits from deleting or purging queues through their browser: a browser cannot send
    /// an Authorization header cross-site without a CORS preflight, which the broker never grants.
    /// </summary>
    private static bool IsSigned(HttpRequest request)
    {
        if (request.Headers["Sec-Fetch-Site"].ToString() is "cross-site" or "same-site")
            return false;
        return request.Headers.Authorization.ToString().StartsWith("AWS4-HMAC-SHA256 ", StringComparison.Ordinal)
               || request.Query.ContainsKey("X-Amz-Signature");
    }

    private static partial class Events
    {
        [LoggerMessage(EventId = 2701, Level = LogLevel.Error, Message = "SQS request {RequestId} failed unexpectedly")]
        public static partial void Unexpected(ILogger logger, string requestId, Exception error);
    }
}
