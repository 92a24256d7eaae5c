namespace Broker.Client;

/// <summary>
/// A setting is missing or unreadable. <see cref="Setting"/> names the environment variable (for example
/// <c>QUEUE_PLATFORM_LISTENERS</c>); the message also names the <see cref="BrokerClientOptions"/> property.
/// </summary>
public sealed class BrokerConfigurationException(string setting, string message) : Exception(message)
{
    /// <summary>The environment variable of the setting, for example <c>QUEUE_PLATFORM_TOPIC</c>.</summary>
    public string Setting { get; } = setting;
}
