using System.Net;
using System.Net.Sockets;
using System.Text.Json.Serialization;
using Broker.Client;

namespace Broker.IntegrationTests.Sdk;

/// <summary>What the SDK tests share: settings that ignore this machine's environment, and a free port to pick.</summary>
internal static class SdkTesting
{
    public static readonly IReadOnlyDictionary<string, string?> NoEnvironment = new Dictionary<string, string?>();

    /// <summary>Settings for <paramref name="listeners"/> from code alone (the test machine's QUEUE_PLATFORM_* do not leak in).</summary>
    public static BrokerSettings Settings(string listeners, Action<BrokerClientOptions>? configure = null)
    {
        var options = new BrokerClientOptions { Listeners = listeners, RetryBackoff = TimeSpan.FromMilliseconds(20) };
        configure?.Invoke(options);
        return BrokerSettings.Resolve(options, NoEnvironment);
    }

    public static BrokerSettings Settings(Uri listener, Action<BrokerClientOptions>? configure = null) =>
        Settings(listener.ToString(), configure);

    /// <summary>A loopback port nothing listens on right now (bound, then freed): a listener that is down, or a fixed port for a restart.</summary>
    public static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }
}

public sealed record ScrapedItem(string Url, int Status, string[] Tags);

/// <summary>A source-generated context, as a trimmed service would use.</summary>
[JsonSerializable(typeof(ScrapedItem))]
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
public sealed partial class SdkJsonContext : JsonSerializerContext;
