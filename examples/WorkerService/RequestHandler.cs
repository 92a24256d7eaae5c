using System.Text.Json;
using Broker.Client;
using Microsoft.Extensions.Logging;

namespace WorkerService;

/// <summary>Audits one crawled request: slow responses are reported. Returning acks it; throwing nacks it for a retry.</summary>
internal sealed partial class RequestHandler(ILogger<RequestHandler> logger) : IBrokerMessageHandler
{
    public async Task HandleAsync(BrokerMessage message, CancellationToken cancellationToken)
    {
        var request = message.Value<JsonElement>().GetProperty("payload");
        double seconds = request.GetProperty("seconds").GetDouble();
        await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);   // stands in for real work
        if (seconds > 0.1)
            Log.SlowRequest(logger, request.GetProperty("url").GetString() ?? "", seconds);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Slow request {Url}: {Seconds} s")]
        public static partial void SlowRequest(ILogger logger, string url, double seconds);
    }
}
